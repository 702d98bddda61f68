#!/usr/bin/env python3
"""localgem vs upstream llama-server, side by side in one run: same GGUF, same threads.

Scenarios, per model (each server is started fresh for each scenario):

* single: one stream, decode tok/s over 128 generated tokens, and prefill tok/s on a
  ~512-token prompt (tokens processed / time to first token; every run starts with a unique
  word so that no server can reuse an earlier run's prompt);
* parallel8: 8 concurrent streams, aggregate output tok/s, median of 3 rounds (llama-server
  with -np 8);
* conversations: 4 conversations of 10 turns (~150 new tokens a turn) sent interleaved, time to
  first token per turn; localgem chains by previous_interaction_id, llama-server receives the
  whole history (its prompt cache at its best: one slot per conversation);
* restart: the same, with both servers restarted between turn 5 and turn 6;
* spec: answers that quote, edit or extract into JSON a given document (greedy, 256 tokens),
  where speculation from the conversation pays: decode tok/s of llama-server's defaults,
  llama-server with its own draft-free speculation (--spec-type ngram-simple), localgem with
  --draft-max 0, its defaults (speculation where the check at load finds it exact) and
  --draft-max 8 (speculation asked for);
* localgem-exact (with --with-exact): localgem with --exact (flash attention off, answers
  prefilled again: bit-exact reuse, and so no speculation), to show what exactness costs;
* membw: the machine's memory read bandwidth (bench/membw.c) and the decode tok/s it allows.

Standard library only. Prints a Markdown report and writes the raw numbers as JSON.

    python3 bench/bench.py --localgem PATH --llama-server PATH --models-dir DIR
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
}
WORDS = ("river stone lantern orchard copper meadow harbor violet thunder maple quiet "
         "falcon garden ember silver canyon willow amber prairie glacier velvet cedar "
         "tide pebble hollow summit breeze marble").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        for path in ("/healthz", "/health"):
            try:
                with urllib.request.urlopen(url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def sse_events(resp):
    """The JSON payloads of a server-sent event stream's `data:` lines ([DONE] excluded)."""
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


class Server:
    """One server process; `kind` is 'localgem' or 'llama-server'."""

    def __init__(self, kind, args, model, parallel, data_dir=None):
        self.kind, self.args, self.model, self.parallel = kind, args, model, parallel
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="bench-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        a = self.args
        if self.kind.startswith("localgem"):
            cmd = [a.localgem, "serve", "--addr", f"127.0.0.1:{self.port}",
                   "--model", self.model, "--default-model", self.model,
                   "--threads", str(a.threads), "--parallel", str(self.parallel),
                   "--kv-slots", str(max(8, self.parallel)), "--ctx-size", str(a.ctx),
                   "--data-dir", self.data_dir, "--models-dir", a.models_dir]
            if self.kind == "localgem-exact":
                cmd += ["--exact"]
            if self.kind == "localgem-nodraft":
                cmd += ["--draft-max", "0"]
            if self.kind == "localgem-draft":
                cmd += ["--draft-max", "8"]
            env = dict(os.environ, LOCALGEM_PYTHON="false", LOCALGEM_LOG="warn")
        else:
            cmd = [a.llama_server, "-m", os.path.join(a.models_dir, MODELS[self.model]),
                   "--host", "127.0.0.1", "--port", str(self.port),
                   "-t", str(a.threads), "-tb", str(a.threads), "-c", str(a.ctx),
                   "-np", str(self.parallel), "--no-webui"]
            if self.kind == "llama-server-ngram":
                cmd += ["--spec-type", "ngram-simple"]
            env = dict(os.environ)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env)
        wait_health(self.url, self.proc)
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- one streamed generation ------------------------------------------------------
    def generate(self, messages, max_tokens, system=None, previous_id=None, schema=None):
        """Stream one answer. `messages`: the whole history (llama-server) or just the new
        user text (localgem with previous_id); `schema`: a JSON schema the answer must follow
        (localgem `response_format`, llama-server `json_schema`). Returns timings and token
        counts."""
        if self.kind.startswith("localgem"):
            return self._gen_localgem(messages, max_tokens, system, previous_id, schema)
        return self._gen_llama(messages, max_tokens, system, schema)

    def _gen_localgem(self, messages, max_tokens, system, previous_id, schema=None):
        if previous_id:
            inp = messages[-1]["content"]
        else:
            inp = [{"type": "user_input" if m["role"] == "user" else "model_output",
                    "content": [{"type": "text", "text": m["content"]}]} for m in messages]
        body = {"model": self.model, "input": inp, "stream": True,
                "generation_config": {"temperature": 0, "max_output_tokens": max_tokens}}
        if system:
            body["system_instruction"] = system
        if previous_id:
            body["previous_interaction_id"] = previous_id
        if schema is not None:
            body["response_format"] = {"type": "text", "mime_type": "application/json",
                                       "schema": schema}
        req = urllib.request.Request(
            f"{self.url}/v1beta/interactions", data=json.dumps(body).encode(), method="POST",
            headers={"content-type": "application/json", "x-goog-api-key": "bench"})
        t0 = time.perf_counter()
        first = last = None
        text, inter = [], None
        with urllib.request.urlopen(req, timeout=900) as resp:
            for ev in sse_events(resp):
                if ev["event_type"] == "step.delta" and ev["delta"].get("text"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(ev["delta"]["text"])
                elif ev["event_type"] == "interaction.completed":
                    inter = ev["interaction"]
        t1 = time.perf_counter()
        u = inter["usage"]
        return {"t0": t0, "first": first or t1, "last": last or t1, "end": t1,
                "ttft": (first or t1) - t0, "out": u["total_output_tokens"],
                "prompt": u["total_input_tokens"],
                "processed": u["total_input_tokens"] - u.get("total_cached_tokens", 0),
                "text": "".join(text), "id": inter.get("id")}

    def _gen_llama(self, messages, max_tokens, system, schema=None):
        msgs = ([{"role": "system", "content": system}] if system else []) + messages
        body = {"messages": msgs, "stream": True, "temperature": 0, "max_tokens": max_tokens,
                "stream_options": {"include_usage": True}}
        if schema is not None:
            body["json_schema"] = schema
        req = urllib.request.Request(
            f"{self.url}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
            headers={"content-type": "application/json"})
        t0 = time.perf_counter()
        first = last = None
        text, timings, usage = [], {}, {}
        with urllib.request.urlopen(req, timeout=900) as resp:
            for ev in sse_events(resp):
                for c in ev.get("choices") or []:
                    piece = (c.get("delta") or {}).get("content")
                    if piece:
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        text.append(piece)
                timings = ev.get("timings") or timings
                usage = ev.get("usage") or usage
        t1 = time.perf_counter()
        return {"t0": t0, "first": first or t1, "last": last or t1, "end": t1,
                "ttft": (first or t1) - t0,
                "out": timings.get("predicted_n", usage.get("completion_tokens", 0)),
                "prompt": usage.get("prompt_tokens", 0),
                "processed": timings.get("prompt_n", usage.get("prompt_tokens", 0)),
                "text": "".join(text), "id": None}


def decode_rate(r):
    span = r["last"] - r["first"]
    return (r["out"] - 1) / span if span > 0 and r["out"] > 1 else float("nan")


def words(n, rng):
    return " ".join(rng.choice(WORDS) for _ in range(n))


# -- scenarios --------------------------------------------------------------------------

def single(srv, runs, rng):
    dec, pre = [], []
    for i in range(runs):
        r = srv.generate([{"role": "user", "content":
                           f"{rng.choice(WORDS)} {i}. Write a long story about a lighthouse keeper "
                           "and the ships she guides, with many details."}], 128)
        dec.append(decode_rate(r))
    for i in range(runs):
        # ~512 prompt tokens, unique from the first word on
        prompt = f"{i} {words(1, rng)} Summarise this list: " + words(470, rng)
        r = srv.generate([{"role": "user", "content": prompt}], 1)
        pre.append({"processed": r["processed"], "ttft": r["ttft"],
                    "rate": r["processed"] / r["ttft"]})
    return {"decode_tok_s": statistics.median(dec), "decode_runs": dec,
            "prefill_tok_s": statistics.median(p["rate"] for p in pre),
            "prefill_tokens": statistics.median(p["processed"] for p in pre),
            "prefill_runs": pre}


RECIPE_SCHEMA = {"type": "object", "properties": {
    "recipe_name": {"type": "string", "maxLength": 160},
    "ingredients": {"type": "array", "maxItems": 12,
                    "items": {"type": "string", "maxLength": 160}}},
    "required": ["recipe_name", "ingredients"], "additionalProperties": False}


def constrained(srv, runs, rng):
    """Decode speed under a JSON schema (the same schema, bounds written out, for both
    servers), and whether every answer parsed."""
    dec, parsed = [], 0
    for i in range(runs):
        r = srv.generate([{"role": "user", "content":
                           f"{rng.choice(WORDS)} {i}. List a few popular cookie recipes, and "
                           "include the amounts of ingredients."}], 256, schema=RECIPE_SCHEMA)
        dec.append(decode_rate(r))
        try:
            json.loads(r["text"])
            parsed += 1
        except ValueError:
            pass
    return {"decode_tok_s": statistics.median(dec), "decode_runs": dec,
            "parsed": parsed, "runs": runs}


DOCUMENT = ("The lighthouse on Gull Rock was built in 1871 by the harbour board of Port "
            "Elliot. Its lamp burned whale oil until 1904, then kerosene until 1938, when the "
            "keeper, Margaret Hale, oversaw the change to electric light. The tower is 31 metres "
            "tall and its beam reaches 22 nautical miles. In the storm of 1953 the keeper's "
            "cottage lost its roof, and the family sheltered in the base of the tower for three "
            "days. The last keeper, Thomas Reed, left in 1989, and the station has been "
            "automatic since then. Today the cottage is a small museum, open from May to "
            "September, with the original lens, the keepers' logbooks and a model of the rock.")
SPEC_PROMPTS = (
    "Repeat this text exactly, word for word:\n\n{doc}",
    "Rewrite this text, replacing every \"keeper\" with \"warden\" and changing nothing "
    "else:\n\n{doc}",
    "From this text, make a JSON object with one entry per event: its year and the sentence "
    "that describes it, quoted exactly.\n\n{doc}",
)


def speculation(srv, runs, rng):
    """Decode speed on answers that repeat their input (greedy); each prompt starts with a
    unique word so that no server reuses an earlier answer."""
    dec, outs = [], []
    for i in range(runs):
        for p in SPEC_PROMPTS:
            r = srv.generate([{"role": "user", "content":
                               f"{rng.choice(WORDS)} {i}. " + p.format(doc=DOCUMENT)}], 256)
            dec.append(decode_rate(r))
            outs.append(r["out"])
    return {"decode_tok_s": statistics.median(dec), "decode_runs": dec,
            "output_tokens": outs}


def parallel(srv, n, rng, reps=3):
    """Median over `reps` rounds of n concurrent streams."""
    rounds = [parallel_once(srv, n, rng) for _ in range(reps)]
    rounds.sort(key=lambda r: r["aggregate_tok_s"])
    mid = dict(rounds[len(rounds) // 2])
    mid["rounds_tok_s"] = [r["aggregate_tok_s"] for r in rounds]
    return mid


def parallel_once(srv, n, rng):
    import threading
    results = [None] * n

    def worker(i):
        results[i] = srv.generate([{"role": "user", "content":
                                    f"Story {i} ({rng.choice(WORDS)}): write a long tale about a "
                                    "travelling musician and the towns she visits."}], 128)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(r["out"] for r in results)
    # decode window: from the last stream's first token to the first stream's end
    return {"aggregate_tok_s": total / wall, "output_tokens": total, "wall_s": wall,
            "per_stream_decode_tok_s": statistics.median(decode_rate(r) for r in results)}


def conversations(srv, n_conv, n_turns, restart_after, seed):
    rng = random.Random(seed)
    system = "You are a helpful assistant. Answer in two sentences."
    hist = [[] for _ in range(n_conv)]
    prev = [None] * n_conv
    ttft = [[None] * n_conv for _ in range(n_turns)]
    processed = [[None] * n_conv for _ in range(n_turns)]
    for t in range(n_turns):
        if restart_after is not None and t == restart_after:
            srv.restart()
        for c in range(n_conv):
            user = (f"Conversation {c}, turn {t + 1}. Here are some notes: " + words(120, rng)
                    + ". Which word appears most often in these notes?")
            hist[c].append({"role": "user", "content": user})
            r = srv.generate(hist[c], 32, system=system, previous_id=prev[c])
            hist[c].append({"role": "assistant", "content": r["text"]})
            prev[c] = r["id"]
            ttft[t][c] = r["ttft"]
            processed[t][c] = r["processed"]
    return {"ttft_s": [statistics.median(x) for x in ttft],
            "processed_tokens": [statistics.median(x) for x in processed],
            "prompt_tokens_last_turn": None}


def membw(args):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "membw.c")
    exe = os.path.join(tempfile.gettempdir(), "localgem-membw")
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", src, "-o", exe], check=True)
    out = subprocess.run([exe, str(args.threads)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def llama_bench(args, model):
    if not args.llama_bench:
        return None
    out = subprocess.run([args.llama_bench, "-m", os.path.join(args.models_dir, MODELS[model]),
                          "-t", str(args.threads), "-p", "512", "-n", "128", "-r", "3",
                          "-o", "json"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    rows = json.loads(out.stdout)
    return {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in rows}


def run_pair(args, model, parallel_n, fn, kinds=None):
    res = {}
    kinds = kinds or (["llama-server", "localgem"] + (["localgem-exact"] if args.with_exact else []))
    for kind in kinds:
        srv = Server(kind, args, model, parallel_n).start()
        try:
            res[kind] = fn(srv)
        finally:
            srv.close()
    return res


def log(model, scenario, values):
    print(f"[{model}] {scenario}: {json.dumps(values)}", file=sys.stderr, flush=True)


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--localgem", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--llama-bench")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--models", default="smollm2-135m,gemma-3-270m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--label", default="")
    ap.add_argument("--scenarios", default="single,parallel8,conversations,restart,json,spec")
    ap.add_argument("--with-exact", action="store_true",
                    help="also run localgem with --exact (bit-exact reuse: flash attention "
                         "off, answers prefilled again, no speculation)")
    args = ap.parse_args()

    report = {"label": args.label, "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
              "cpu": subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True,
                                    capture_output=True, text=True).stdout.strip(),
              "membw": membw(args), "models": {}}
    for model in args.models.split(","):
        size = os.path.getsize(os.path.join(args.models_dir, MODELS[model]))
        m = {"gguf_bytes": size, "llama_bench": llama_bench(args, model)}
        rng = random.Random(1)
        want = set(args.scenarios.split(","))
        if "single" in want:
            m["single"] = run_pair(args, model, 1, lambda s: single(s, args.runs, rng))
            log(model, "single", {k: (v["decode_tok_s"], v["prefill_tok_s"]) for k, v in m["single"].items()})
        if "parallel8" in want:
            m["parallel8"] = run_pair(args, model, 8, lambda s: parallel(s, 8, rng))
            log(model, "parallel8", {k: v["aggregate_tok_s"] for k, v in m["parallel8"].items()})
        if "conversations" in want:
            m["conversations"] = run_pair(args, model, 4,
                                          lambda s: conversations(s, 4, args.turns, None, 7))
            log(model, "conversations", {k: v["ttft_s"][-1] for k, v in m["conversations"].items()})
        if "restart" in want:
            m["restart"] = run_pair(args, model, 4,
                                    lambda s: conversations(s, 4, 6, 5, 7))
            log(model, "restart", {k: v["ttft_s"][5] for k, v in m["restart"].items()})
        if "json" in want:
            m["json"] = run_pair(args, model, 1, lambda s: constrained(s, args.runs, rng))
            log(model, "json", {k: (v["decode_tok_s"], v["parsed"]) for k, v in m["json"].items()})
        if "spec" in want:
            m["spec"] = run_pair(args, model, 1, lambda s: speculation(s, max(1, args.runs // 2), rng),
                                 ["llama-server", "llama-server-ngram", "localgem-nodraft", "localgem",
                                  "localgem-draft"])
            log(model, "spec", {k: v["decode_tok_s"] for k, v in m["spec"].items()})
        report["models"][model] = m
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    if want_all(args):
        print(markdown(report))
    else:
        for model, m in report["models"].items():
            if "spec" in m:
                sp = m["spec"]
                print(f"| {model} | decode tok/s quoting/editing/extracting a document | "
                      + " | ".join(f"{k}: {v['decode_tok_s']:.3g} (median of {len(v['decode_runs'])}, "
                                   f"{sum(v['output_tokens'])} tokens)" for k, v in sp.items())
                      + f" | localgem/llama-server {ratio(sp['localgem']['decode_tok_s'], sp['llama-server']['decode_tok_s']):.2f}× |")
            if "json" in m:
                j = m["json"]
                print(f"| {model} | decode tok/s under a JSON schema (answers parsed) | "
                      + " | ".join(f"{k}: {v['decode_tok_s']:.3g} ({v['parsed']}/{v['runs']})"
                                   for k, v in j.items())
                      + f" | ratio {ratio(j['localgem']['decode_tok_s'], j['llama-server']['decode_tok_s']):.2f}× |")
        print(json.dumps(report["models"], indent=1)[:4000])


def want_all(args):
    return set(args.scenarios.split(",")) >= {"single", "parallel8", "conversations", "restart"}


def markdown(rep):
    bw = rep["membw"]["read_gb_s"]
    lines = [f"Machine: {rep['cpu']}, {rep['threads']} threads; measured read bandwidth "
             f"{bw:.1f} GB/s. {rep['label']}", ""]
    fa = any("localgem-exact" in m["single"] for m in rep["models"].values())
    head = "| model | metric | llama-server | localgem | ratio | target |"
    lines.append(head + (" localgem --exact | ratio |" if fa else ""))
    lines.append("|---|---|---|---|---|---|" + ("---|---|" if fa else ""))
    for model, m in rep["models"].items():
        s, p = m["single"], m["parallel8"]
        c, r = m["conversations"], m["restart"]
        ls, lg = "llama-server", "localgem"
        def get(kind):
            if kind not in s:
                return None
            return [s[kind]["decode_tok_s"], s[kind]["prefill_tok_s"], p[kind]["aggregate_tok_s"],
                    c[kind]["ttft_s"][-1], r[kind]["ttft_s"][5]]
        names = [("decode tok/s, 1 stream", "≥ 1.0"),
                 ("prefill tok/s, ~512-token prompt", "≥ 1.0"),
                 ("aggregate tok/s, 8 streams", "≥ 1.0"),
                 ("TTFT turn 10, 4 interleaved conversations (s)", "≤ 1.0"),
                 ("TTFT turn 6 after a restart (s)", "≤ 0.2")]
        base, ours, ours_fa = get(ls), get(lg), get("localgem-exact")
        for k, (name, target) in enumerate(names):
            a, b = base[k], ours[k]
            line = f"| {model} | {name} | {a:.3g} | {b:.3g} | {ratio(b, a):.2f}× | {target} |"
            if ours_fa:
                line += f" {ours_fa[k]:.3g} | {ratio(ours_fa[k], a):.2f}× |"
            lines.append(line)
        if "json" in m:
            j = m["json"]
            line = (f"| {model} | decode tok/s under a JSON schema (answers parsed) | "
                    f"{j[ls]['decode_tok_s']:.3g} ({j[ls]['parsed']}/{j[ls]['runs']}) | "
                    f"{j[lg]['decode_tok_s']:.3g} ({j[lg]['parsed']}/{j[lg]['runs']}) | "
                    f"{ratio(j[lg]['decode_tok_s'], j[ls]['decode_tok_s']):.2f}× | ≥ 1.0 |")
            if ours_fa:
                jf = j["localgem-exact"]
                line += (f" {jf['decode_tok_s']:.3g} | "
                         f"{ratio(jf['decode_tok_s'], j[ls]['decode_tok_s']):.2f}× |")
            lines.append(line)
        if "spec" in m:
            sp = m["spec"]
            base_s = sp[ls]["decode_tok_s"]
            for kind, name in (("llama-server-ngram", "llama-server --spec-type ngram-simple"),
                               ("localgem-nodraft", "localgem --draft-max 0"),
                               (lg, "localgem (defaults)"),
                               ("localgem-draft", "localgem --draft-max 8 (where the check at "
                                "load finds it inexact)")):
                if kind in sp:
                    lines.append(f"| {model} | decode tok/s quoting/editing/extracting a document: "
                                 f"{name} | {base_s:.3g} | {sp[kind]['decode_tok_s']:.3g} | "
                                 f"{ratio(sp[kind]['decode_tok_s'], base_s):.2f}× | "
                                 f"{'≥ 1.3' if kind == lg else ''} |" + (" | |" if fa else ""))
        limit = bw * 1e9 / m["gguf_bytes"]
        lines.append(f"| {model} | decode limit from bandwidth (GGUF {m['gguf_bytes'] / 1e6:.0f} MB) "
                     f"| {limit:.0f} tok/s | {s[lg]['decode_tok_s'] / limit:.0%} of it | | |")
    lines.append("")
    for model, m in rep["models"].items():
        for scen in ("conversations", "restart"):
            lines.append(f"{model}, {scen}: median TTFT per turn (s) and prompt tokens processed")
            lines.append("")
            lines.append("| turn | " + " | ".join(str(i + 1) for i in range(len(m[scen]['localgem']['ttft_s']))) + " |")
            lines.append("|---|" + "---|" * len(m[scen]['localgem']['ttft_s']))
            for kind in m[scen]:
                v = m[scen][kind]
                lines.append(f"| {kind} TTFT | " + " | ".join(f"{x:.3f}" for x in v["ttft_s"]) + " |")
                lines.append(f"| {kind} prefilled | " + " | ".join(f"{x:.0f}" for x in v["processed_tokens"]) + " |")
            lines.append("")
        if m.get("llama_bench"):
            lb = m["llama_bench"]
            lines.append(f"{model}, llama-bench (no HTTP, same threads): prefill "
                         f"{lb.get('prefill', 0):.0f} tok/s, decode {lb.get('decode', 0):.1f} tok/s")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
