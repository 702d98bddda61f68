"""localgem in front of upstream llama-server, for real: two llama-server processes (built from
the llama.cpp tree of the PyPI source package llama-cpp-python) serving SmolLM2-135M, one
localgem serving that model through them, and one localgem serving the same GGUF in process
for comparison.

    python remote.py            the checks (PASS/FAIL lines; exit 1 on a failure)

(bench/remote.py measures localgem over llama-server against llama-server directly.)

Environment: LOCALGEM_BIN, LOCALGEM_MODELS_DIR, LLAMA_SERVER (the llama-server binary),
REMOTE_KEEP=1 keeps the work dir, REMOTE_NO_SEEDS=1 skips the
seed examples, REMOTE_ONLY (a regex) runs only the checks it matches.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "scale"))
import scale  # noqa: E402  (the HTTP helpers the scale test uses)
from scale import answer, call, free_port, send, stream, until  # noqa: E402

BIN = os.environ["LOCALGEM_BIN"]
MODELS = os.environ["LOCALGEM_MODELS_DIR"]
LLAMA_SERVER = os.environ["LLAMA_SERVER"]
GGUF = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL = "smollm2-135m"


class Setup:
    def __init__(self, work, in_process=True):
        self.work = work
        self.procs = {}
        self.up = {"u1": free_port(), "u2": free_port()}
        for name in self.up:
            self.start_upstream(name)
        self.remote = free_port()
        urls = ",".join(f"http://127.0.0.1:{p}" for p in self.up.values())
        self.spawn("remote", [
            BIN, "serve", "--addr", f"127.0.0.1:{self.remote}",
            "--data-dir", os.path.join(work, "remote"), "--models-dir", MODELS,
            "--model", f"{MODEL}=llama-server+{urls}",
        ])
        self.local = None
        if in_process:
            self.local = free_port()
            self.spawn("local", [
                BIN, "serve", "--addr", f"127.0.0.1:{self.local}",
                "--data-dir", os.path.join(work, "local"), "--models-dir", MODELS,
                "--model", MODEL, "--threads", "1", "--parallel", "2", "--exact",
            ])
        for name, port in [("remote", self.remote), ("local", self.local)]:
            if port:
                until(f"{name} up", 300, lambda p=port: self.healthy(p), every=0.2)

    def spawn(self, name, argv):
        log = open(os.path.join(self.work, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start_upstream(self, name):
        # Flash attention off, as the in-process engine runs with --exact; one thread (2 cores,
        # 3 servers).
        self.spawn(name, [
            LLAMA_SERVER, "-m", GGUF, "--host", "127.0.0.1", "--port", str(self.up[name]),
            "-t", "1", "-c", "8192", "-np", "2", "-fa", "off", "--no-webui",
        ])
        until(f"{name} up", 120, lambda: self.healthy(self.up[name], "/health"), every=0.2)

    def healthy(self, port, path="/healthz"):
        try:
            return call(port, "GET", path, timeout=2)[0] == 200
        except OSError:
            return False

    def kill9(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def upstreams(self):
        s, v = call(self.remote, "GET", "/healthz")
        return {u["url"].rsplit(":", 1)[1]: u for u in v.get("upstreams", [])}

    def requests_by_upstream(self):
        s, text = call(self.remote, "GET", "/metrics")
        out = {}
        for line in text.splitlines():
            m = re.match(r'localgem_upstream_requests_total\{(.*)\} (\S+)', line)
            if m:
                port = re.search(r'upstream="http://127\.0\.0\.1:(\d+)"', m.group(1)).group(1)
                out[port] = float(m.group(2))
        return out

    def close(self):
        scale.stop_all(self.procs.values())


def create(port, body):
    body = {"model": "gemini-3-flash-preview", **body}
    s, v = call(port, "POST", "/v1beta/interactions", body, timeout=300)
    if s != 200:
        raise AssertionError(f"create: {s} {v}")
    return v


def greedy(prompt, max_tokens=96, **extra):
    return {"input": prompt,
            "generation_config": {"temperature": 0, "max_output_tokens": max_tokens}, **extra}


def seed_examples(st):
    env = dict(os.environ)
    # The Python SDK 3.x, the JavaScript SDK and curl (the 2.x SDK sends what 3.x sends, and
    # runs against the in-process engine in the conformance step).
    env.update(LOCALGEM_URL=f"http://127.0.0.1:{st.remote}", CONFORMANCE_NO_EXTRA="1",
               CONFORMANCE_SKIP_SETUP="1", CONFORMANCE_ONLY="/(python-sdk3|javascript|rest)$")
    out = subprocess.run(["bash", os.path.join(REPO, "tests/conformance/run.sh")],
                         env=env, capture_output=True, text=True, timeout=2400)
    summary = [l for l in out.stdout.splitlines() if l.startswith("conformance:")]
    if out.returncode != 0:
        fails = [l for l in out.stdout.splitlines() if l.startswith("FAIL")]
        raise AssertionError(f"{summary} {fails[:5]} {out.stderr[-500:]}")
    assert summary and not summary[0].startswith("conformance: 0 passed"), out.stdout[-500:]
    return summary[0]


# The seed documents' prompts (and a Thai and a Vietnamese one: tokens that end inside a UTF-8
# character are left out of llama-server's stream, and must be recovered).
SEED_PROMPTS = [
    greedy("Explain how AI works"),
    greedy("How does AI work?"),
    greedy("Hello there", system_instruction="You are a cat. Your name is Neko."),
    greedy("I have 2 dogs in my house."),
    greedy("สวัสดีครับ เขียนกลอนสั้นๆ เกี่ยวกับทะเล"),
    greedy("Xin chào! Hãy viết một bài thơ ngắn về biển."),
]


def same_as_in_process(st):
    same = 0
    for body in SEED_PROMPTS:
        r, l = create(st.remote, body), create(st.local, body)
        ra, la = answer(r), answer(l)
        if ra != la:
            raise AssertionError(f"{body['input']!r}: remote {ra[:120]!r} != in-process {la[:120]!r}")
        assert r["usage"]["total_output_tokens"] == l["usage"]["total_output_tokens"], (r["usage"], l["usage"])
        assert r["usage"]["total_input_tokens"] == l["usage"]["total_input_tokens"]
        same += 1
    # A chain, continued from the stored first turn on each.
    r1, l1 = create(st.remote, greedy("I have 2 dogs in my house.")), create(st.local, greedy("I have 2 dogs in my house."))
    r2 = create(st.remote, greedy("How many paws are in my house?", previous_interaction_id=r1["id"]))
    l2 = create(st.local, greedy("How many paws are in my house?", previous_interaction_id=l1["id"]))
    assert answer(r2) == answer(l2), (answer(r2), answer(l2))
    return f"{same} prompts and a 2-turn chain: identical text and token counts"


def classic(st):
    """generateContent, countTokens and streamGenerateContent on a remote model."""
    base = "/v1beta/models/gemini-2.5-flash:"

    def gen(port, contents):
        s, v = call(port, "POST", base + "generateContent",
                    {"contents": contents, "generationConfig": {"temperature": 0, "maxOutputTokens": 48}},
                    timeout=300)
        assert s == 200, (s, v)
        return v

    def text(v):
        return "".join(p.get("text", "") for p in v["candidates"][0]["content"]["parts"])

    turn1 = [{"role": "user", "parts": [{"text": "I have 2 dogs in my house."}]}]
    r, l = gen(st.remote, turn1), gen(st.local, turn1)
    assert text(r) and text(r) == text(l), (text(r), text(l))
    assert r["usageMetadata"]["promptTokenCount"] == l["usageMetadata"]["promptTokenCount"]
    # The second turn resends the first, as the API does: the upstream's cache serves it.
    turn2 = turn1 + [r["candidates"][0]["content"],
                     {"role": "user", "parts": [{"text": "How many paws are in my house?"}]}]
    r2, l2 = gen(st.remote, turn2), gen(st.local, turn2)
    assert text(r2) == text(l2), (text(r2), text(l2))
    cached = r2["usageMetadata"].get("cachedContentTokenCount", 0)
    prompt = r2["usageMetadata"]["promptTokenCount"]
    assert cached >= r["usageMetadata"]["promptTokenCount"], r2["usageMetadata"]
    s, c = call(st.remote, "POST", base + "countTokens", {"contents": turn2})
    assert s == 200 and c["totalTokens"] == prompt, (s, c, prompt)
    chunks = stream(st.remote, "POST", base + "streamGenerateContent?alt=sse",
                    {"contents": turn1, "generationConfig": {"temperature": 0, "maxOutputTokens": 48}})
    assert "".join(text(ch) for ch in chunks) == text(r), chunks[-1]
    assert chunks[-1]["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS"), chunks[-1]
    return f"same text as in process; turn 2 reused {cached} of {prompt} prompt tokens upstream; countTokens agrees"


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string", "enum": ["Hanoi", "Bangkok", "Paris"]},
    },
    "required": ["name", "age", "city"],
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
               "required": ["city", "unit"]}}


def valid_person(v):
    assert set(v) == {"name", "age", "city"}, v
    assert isinstance(v["name"], str) and isinstance(v["age"], int), v
    assert v["city"] in PERSON["properties"]["city"]["enum"], v


def constrained(st):
    notes = []
    for seed in range(3):
        v = create(st.remote, {"input": "Describe a person who lives in Asia.", "response_format": PERSON,
                               "generation_config": {"temperature": 1.0, "seed": seed}})
        valid_person(json.loads(answer(v)))
    notes.append("3 schema-valid JSON answers at temperature 1")
    for prompt in ["What is the weather in Paris?", "Tell me a joke."]:
        v = create(st.remote, {"input": prompt, "tools": [WEATHER],
                               "generation_config": {"tool_choice": "any", "temperature": 0.7, "seed": 1}})
        calls = [s for s in v["steps"] if s["type"] == "function_call"]
        assert v["status"] == "requires_action" and len(calls) == 1, v
        args = calls[0]["arguments"]
        assert calls[0]["name"] == "get_weather" and set(args) == {"city", "unit"}, calls
        assert isinstance(args["city"], str) and args["unit"] in ("c", "f"), args
    notes.append("tool_choice any: a valid call even for an unrelated prompt")
    s, v = call(st.remote, "POST", "/v1beta/interactions", {
        "model": MODEL, "input": "x", "tools": [WEATHER],
        "generation_config": {"tool_choice": "validated"}})
    assert s == 400 and "validated" in v["error"]["message"], (s, v)
    notes.append(f"validated: 400 ({v['error']['message'][:60]}...)")
    return "; ".join(notes)


def chain_on_one_upstream(st):
    before = st.requests_by_upstream()
    prev, last_input, cached = None, 0, []
    for turn in range(6):
        body = greedy(f"Turn {turn}: tell me one more fact about the moon.", max_tokens=24)
        if prev:
            body["previous_interaction_id"] = prev
        v = create(st.remote, body)
        u = v["usage"]
        if turn > 0:
            assert u["total_cached_tokens"] >= last_input, (turn, u, last_input)
            cached.append(u["total_cached_tokens"])
        last_input, prev = u["total_input_tokens"], v["id"]
    after = st.requests_by_upstream()
    delta = {p: after.get(p, 0) - before.get(p, 0) for p in after}
    assert sorted(delta.values()) == [0, 6], delta
    return f"6 turns on one upstream {delta}; cached tokens of turns 2-6: {cached}"


# A ChatML template that reasons in `<think>` tags (as crates/cli/tests/real_model.rs uses):
# SmolLM2 never closes the thought itself, so the thinking budget has to.
THINKING_TEMPLATE = (
    "{%- for m in messages -%}<|im_start|>{{ m.role }}\n{% if m.reasoning_content %}<think>\n"
    "{{ m.reasoning_content }}\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n{% endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking %}<think>\n"
    "{% else %}<think>\n\n</think>\n\n{% endif %}{% endif -%}")


def thinking_budget(st):
    tpl = os.path.join(st.work, "thinking.jinja")
    with open(tpl, "w") as f:
        f.write(THINKING_TEMPLATE)
    port = free_port()
    urls = ",".join(f"http://127.0.0.1:{p}" for p in st.up.values())
    st.spawn("thinking", [
        BIN, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", os.path.join(st.work, "thinking"),
        "--models-dir", MODELS, "--model", f"{MODEL}=llama-server+{urls}", "--chat-template-file", tpl,
    ])
    until("thinking server up", 60, lambda: st.healthy(port), every=0.2)
    v = create(port, {"input": "Explain step by step, thinking carefully, why the sky is blue.",
                      "generation_config": {"thinking_level": "low", "thinking_summaries": "auto",
                                            "temperature": 0, "max_output_tokens": 30}})
    steps = v["steps"]
    assert [s["type"] for s in steps[:2]] == ["thought", "model_output"], steps
    thought = steps[0]["summary"][0]["text"]
    assert "<think>" not in thought and "</think>" not in thought, thought
    assert "</think>" not in answer(v), v
    u = v["usage"]
    # The budget (256 for `low`) and the closing tag, sent as a continuation.
    assert 256 <= u["total_thought_tokens"] <= 262, u
    assert u["total_output_tokens"] <= 30, u
    assert u["total_cached_tokens"] <= u["total_input_tokens"], u
    return f"thought {u['total_thought_tokens']} tokens, then {u['total_output_tokens']} of answer"


def refusals(st):
    # A 1x1 PNG.
    import base64
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    s, v = call(st.remote, "POST", "/v1beta/interactions", {
        "model": MODEL, "input": [{"type": "text", "text": "What is this?"},
                                  {"type": "image", "data": base64.b64encode(png).decode(),
                                   "mime_type": "image/png"}]})
    assert s == 400 and "image" in v["error"]["message"], (s, v)
    return f"an image: 400 ({v['error']['message'][:70]})"


def cancel_on_disconnect(st):
    body = {"model": MODEL, "input": "Tell me a very long story about a lighthouse keeper.", "stream": True,
            "generation_config": {"temperature": 0, "max_output_tokens": 2000}}
    c, r = send(st.remote, "POST", "/v1beta/interactions", body, timeout=60)
    assert r.status == 200, (r.status, r.read()[:300])
    seen = 0
    for raw in r:
        if raw.startswith(b"data: ") and b"step.delta" in raw:
            seen += 1
            if seen >= 5:
                break
    assert any(u["in_flight"] for u in st.upstreams().values()), (seen, st.upstreams())
    c.close()
    took = until("upstream request closed", 5,
                 lambda: all(u["in_flight"] == 0 for u in st.upstreams().values()))
    # And the upstream's slot is free again: a new request is answered at once.
    v = create(st.remote, greedy("Hello there", max_tokens=8))
    assert v["status"] in ("completed", "incomplete"), v
    return f"upstream request closed {took:.2f} s after the client left"


def kill_upstreams(st):
    results = {}
    body = {"model": MODEL, "input": "Tell me a very long story about a lighthouse keeper.", "stream": True,
            "generation_config": {"temperature": 0, "max_output_tokens": 3000}}

    def on(e):
        if e.get("event_type") == "step.delta" and "killed" not in results:
            busy = [p for p, u in st.upstreams().items() if u["in_flight"]]
            if busy:
                name = [n for n, p in st.up.items() if str(p) == busy[0]][0]
                results["killed"] = name
                st.kill9(name)
        return False

    events = stream(st.remote, "POST", "/v1beta/interactions", body, on_event=on, timeout=120)
    kinds = [e.get("event_type") for e in events]
    assert "killed" in results, kinds[:5]
    errors = [e for e in events if e.get("event_type") == "error"]
    assert errors, kinds[-5:]
    message = errors[-1]["error"]["message"]
    assert "llama-server" in message and "failed" in message, message
    iid = next((e["interaction"]["id"] for e in events if "interaction" in e and e["interaction"].get("id")), None)
    if iid:
        s, v = call(st.remote, "GET", f"/v1beta/interactions/{iid}")
        assert v["status"] == "failed", v["status"]
    # New requests go to the other upstream.
    for i in range(3):
        v = create(st.remote, greedy(f"Say hello {i}", max_tokens=8))
        assert v["status"] in ("completed", "incomplete"), v
    other = [n for n in st.up if n != results["killed"]][0]
    st.kill9(other)
    began = time.time()
    s, v = call(st.remote, "POST", "/v1beta/interactions",
                {"model": MODEL, "input": "hi", "generation_config": {"max_output_tokens": 8}}, timeout=10)
    took = time.time() - began
    assert s == 503 and took < 2, (s, v, took)
    hs, hv = call(st.remote, "GET", "/healthz")
    assert hs == 503 and all(not u["healthy"] for u in hv["upstreams"]), hv
    # One comes back: served again once a probe finds it.
    st.start_upstream(other)
    until("served again", 40, lambda: call(st.remote, "POST", "/v1beta/interactions",
                                           {"model": MODEL, "input": "hi",
                                            "generation_config": {"max_output_tokens": 4}})[0] == 200, every=0.5)
    return (f"killed {results['killed']} mid-stream: error {message[:70]!r}...; "
            f"both down: {s} in {took:.2f} s; back after a restart")


def check(name, fn):
    """scale.check, for the checks REMOTE_ONLY (a regex) selects."""
    if re.search(os.environ.get("REMOTE_ONLY", ""), name):
        scale.check(name, fn)


def main():
    work = tempfile.mkdtemp(prefix="localgem-remote.")
    st = None
    try:
        st = Setup(work)
        if not os.environ.get("REMOTE_NO_SEEDS"):
            check("seed examples (Python, JavaScript, curl) against localgem over two llama-servers",
                  lambda: seed_examples(st))
        check("temperature 0: the same text through llama-server as in process", lambda: same_as_in_process(st))
        check("JSON schema and tool_choice any through llama-server", lambda: constrained(st))
        check("generateContent through llama-server: same text, cached history, countTokens, SSE",
              lambda: classic(st))
        check("a 6-turn chain stays on one upstream and reuses its cache", lambda: chain_on_one_upstream(st))
        check("a thinking budget closes the thought through a continuation", lambda: thinking_budget(st))
        check("what a remote model cannot take is refused with 400", lambda: refusals(st))
        check("a client that leaves closes the upstream request", lambda: cancel_on_disconnect(st))
        check("upstreams killed: failed run, failover, 503 within 2 s, recovery", lambda: kill_upstreams(st))
    finally:
        if st:
            st.close()
        if os.environ.get("REMOTE_KEEP") or scale.failures:
            print(f"# logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"remote: {len(scale.passed)} passed, {len(scale.failures)} failed")
    sys.exit(1 if scale.failures else 0)


if __name__ == "__main__":
    main()
