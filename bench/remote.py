#!/usr/bin/env python3
"""localgem over llama-server vs llama-server directly: one llama-server (same GGUF, same
threads) answers both; the difference is what localgem adds in front of it.

* single: a unique ~500-token prompt (no cache can help), 128 tokens out; time to first
  token, and decode tok/s from the first to the last token (streamed, greedy). Direct: `/v1/chat/completions` with
  the messages (llama-server applies the GGUF's template). Through localgem: an
  interaction (localgem renders the same template, sends token ids to `/completion`).
* chain: 10-turn conversations (~60 new tokens a turn, 32 out); time to first token of
  each turn, median over --chain-runs conversations each way. Direct: the whole history each turn (llama-server's prompt cache at its best,
  one conversation); through localgem: `previous_interaction_id`. The two conversations run
  one after the other, with different words.

Runs are sequential (one request at a time), medians of --runs. Standard library only.

    python3 bench/remote.py --localgem PATH --llama-server PATH --gguf PATH [--threads 2]
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import WORDS, free_port  # noqa: E402


def wait(url, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy")


def post_stream(url, body, headers=None):
    """(seconds to the first text, seconds to the last text, text pieces, the final
    interaction) of a streamed POST."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", **(headers or {})})
    began = time.perf_counter()
    first, last, pieces, final = None, None, [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            e = json.loads(line[6:])
            text = None
            if e.get("event_type") == "step.delta" and e["delta"].get("type") == "text":
                text = e["delta"]["text"]
            elif "choices" in e and e["choices"]:
                text = (e["choices"][0].get("delta") or {}).get("content")
            if e.get("event_type") == "interaction.completed":
                final = e["interaction"]
            if text:
                last = time.perf_counter() - began
                if first is None:
                    first = last
                pieces.append(text)
    return first, last, pieces, final


def unique_prompt(n_words):
    rng = random.Random(time.time_ns())
    return "Here are some words: " + " ".join(rng.choice(WORDS) for _ in range(n_words)) + \
        ". Now write a long story about a lighthouse keeper."


class Setup:
    def __init__(self, args):
        self.work = tempfile.mkdtemp(prefix="bench-remote-")
        self.up = free_port()
        self.lg = free_port()
        self.procs = [subprocess.Popen(
            [args.llama_server, "-m", args.gguf, "--host", "127.0.0.1", "--port", str(self.up),
             "-t", str(args.threads), "-tb", str(args.threads), "-c", "8192", "-np", "1",
             "-fa", "off", "--no-webui"],
            stdout=open(os.path.join(self.work, "llama-server.log"), "w"), stderr=subprocess.STDOUT)]
        wait(f"http://127.0.0.1:{self.up}/health")
        self.procs.append(subprocess.Popen(
            [args.localgem, "serve", "--addr", f"127.0.0.1:{self.lg}", "--data-dir",
             os.path.join(self.work, "lg"), "--model",
             f"m={args.gguf}@llama-server+http://127.0.0.1:{self.up}"],
            stdout=open(os.path.join(self.work, "localgem.log"), "w"), stderr=subprocess.STDOUT))
        wait(f"http://127.0.0.1:{self.lg}/healthz")

    def direct(self, messages, max_tokens):
        return post_stream(f"http://127.0.0.1:{self.up}/v1/chat/completions", {
            "messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "cache_prompt": True})

    def localgem(self, prompt, max_tokens, prev=None):
        body = {"model": "m", "input": prompt, "stream": True,
                "generation_config": {"temperature": 0, "max_output_tokens": max_tokens}}
        if prev:
            body["previous_interaction_id"] = prev
        return post_stream(f"http://127.0.0.1:{self.lg}/v1beta/interactions", body,
                           {"x-goog-api-key": "bench"})

    def close(self):
        for p in self.procs:
            p.terminate()
            p.wait(20)
        shutil.rmtree(self.work, ignore_errors=True)


def single(s, runs):
    out = {"direct": [], "localgem": []}
    for _ in range(runs):
        for kind in ("direct", "localgem"):
            prompt = unique_prompt(400)
            if kind == "direct":
                # llama-server streams one chunk per token.
                first, total, pieces, _ = s.direct([{"role": "user", "content": prompt}], 128)
                n = len(pieces)
            else:
                first, total, _, final = s.localgem(prompt, 128)
                n = final["usage"]["total_output_tokens"]
            out[kind].append({"ttft": first, "decode": (n - 1) / (total - first), "n": n})
    return out


def chain(s, turns, runs):
    """TTFT per turn of conversations sent directly and through localgem, `runs` of each
    (one conversation at a time, each with the engine to itself: run interleaved, two
    conversations with the same greedy answers would hit each other's cache); the median of
    each turn over the runs."""
    direct, lg = [], []
    for r in range(runs):
        for kind in (("direct", "localgem") if r % 2 == 0 else ("localgem", "direct")):
            ttft, messages, prev = [], [], None
            for t in range(turns):
                prompt = f"Turn {t}. " + unique_prompt(40)
                if kind == "direct":
                    messages.append({"role": "user", "content": prompt})
                    first, _, pieces, _ = s.direct(messages, 32)
                    messages.append({"role": "assistant", "content": "".join(pieces)})
                else:
                    first, _, _, final = s.localgem(prompt, 32, prev)
                    prev = final["id"]
                ttft.append(first)
            (direct if kind == "direct" else lg).append(ttft)
    per_turn = lambda runs_: [statistics.median(r[t] for r in runs_) for t in range(turns)]  # noqa: E731
    return per_turn(direct), per_turn(lg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--localgem", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--chain-runs", type=int, default=3)
    args = ap.parse_args()
    s = Setup(args)
    try:
        s.localgem("warm up", 4)
        s.direct([{"role": "user", "content": "warm up"}], 4)
        one = single(s, args.runs)
        d_chain, l_chain = chain(s, args.turns, args.chain_runs)
    finally:
        s.close()
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    dt, lt = med(one["direct"], "ttft"), med(one["localgem"], "ttft")
    dd, ld = med(one["direct"], "decode"), med(one["localgem"], "decode")
    print(f"model {os.path.basename(args.gguf)}, llama-server -t {args.threads}, "
          f"{args.runs} runs, {args.chain_runs} conversations each way (medians)\n")
    print("| | llama-server directly | localgem over llama-server | localgem overhead |")
    print("|---|---|---|---|")
    print(f"| TTFT, ~500-token prompt | {dt * 1000:.0f} ms | {lt * 1000:.0f} ms | "
          f"{(lt - dt) / dt * 100:+.1f}% |")
    print(f"| decode tok/s (128 out) | {dd:.1f} | {ld:.1f} | {(dd - ld) / dd * 100:+.1f}% slower |")
    print(f"| chain turn-{args.turns} TTFT | {d_chain[-1] * 1000:.0f} ms | {l_chain[-1] * 1000:.0f} ms "
          f"| {(l_chain[-1] - d_chain[-1]) / d_chain[-1] * 100:+.1f}% |")
    print(f"| chain TTFT, turns 2-{args.turns}, median | {statistics.median(d_chain[1:]) * 1000:.0f} ms "
          f"| {statistics.median(l_chain[1:]) * 1000:.0f} ms | |")
    print("\nraw:", json.dumps({"single": one, "chain": {"direct": d_chain, "localgem": l_chain}}))


if __name__ == "__main__":
    main()
