"""Replicas behind one address, for real: PostgreSQL, two localgem replicas and HAProxy
(deploy/haproxy.cfg), all started here, against the bundled SmolLM2-135M.

    python scale.py            the checks (PASS/FAIL lines; exit 1 on a failure)
    python scale.py --bench    the scale benchmark (markdown table on stdout)

Environment: LOCALGEM_BIN (server binary), LOCALGEM_MODELS_DIR (models), SCALE_PY3 (a python
with google-genai, for the seed examples), SCALE_KEEP=1 keeps the work dir.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ["LOCALGEM_BIN"]
MODELS = os.environ["LOCALGEM_MODELS_DIR"]
KEY = "scale-test-key"
LEASE_S = 5
failures = []
passed = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port, method, path, body=None, timeout=120):
    """Send one request with the test key (and a JSON body); its connection and response."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"x-goog-api-key": KEY}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    return c, c.getresponse()


def call(port, method, path, body=None, timeout=120):
    """(status, parsed JSON or text) of one request."""
    c, r = send(port, method, path, body, timeout)
    text = r.read().decode()
    c.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def stream(port, method, path, body=None, on_event=None, timeout=120):
    """Events of an SSE response; `on_event(event)` returning True stops reading."""
    c, r = send(port, method, path, body, timeout)
    if r.status != 200:
        raise AssertionError(f"{method} {path}: {r.status} {r.read()[:300]!r}")
    events = []
    for raw in r:
        line = raw.decode().rstrip("\n")
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        e = json.loads(line[6:])
        events.append(e)
        if on_event and on_event(e):
            break
    c.close()
    return events


def text_of(events):
    return "".join(
        e["delta"]["text"]
        for e in events
        if e.get("event_type") == "step.delta" and e["delta"].get("type") == "text"
    )


def check(name, fn):
    began = time.time()
    try:
        note = fn()
        passed.append(name)
        print(f"PASS {name} ({time.time() - began:.1f} s){': ' + note if note else ''}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def stop_all(procs):
    """Terminate processes (killed when they do not stop within 20 s)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def until(what, limit_s, ok, every=0.05):
    began = time.time()
    while True:
        v = ok()
        if v:
            return time.time() - began
        if time.time() - began > limit_s:
            raise AssertionError(f"{what}: not within {limit_s} s")
        time.sleep(every)


class Cluster:
    def __init__(self, work):
        self.work = work
        self.pg_dir = os.path.join(work, "pg")
        self.pg_url = subprocess.check_output(
            ["bash", os.path.join(REPO, "scripts/pg.sh"), self.pg_dir, str(free_port())], text=True
        ).strip()
        self.ports = {"a": free_port(), "b": free_port()}
        self.procs = {}
        for name in self.ports:
            self.start(name)
        self.lb = free_port()
        env = dict(os.environ)
        env.update(
            LG_LISTEN=f"127.0.0.1:{self.lb}",
            LG_REPLICA_1=f"127.0.0.1:{self.ports['a']}",
            LG_REPLICA_2=f"127.0.0.1:{self.ports['b']}",
        )
        self.haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", os.path.join(REPO, "deploy/haproxy.cfg")],
            env=env,
            stdout=open(os.path.join(work, "haproxy.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        for name in self.ports:
            self.wait(name)
        until("load balancer up", 30, lambda: self.healthy(self.lb), every=0.2)

    def start(self, name):
        log = open(os.path.join(self.work, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen(
            [
                BIN, "serve",
                "--addr", f"127.0.0.1:{self.ports[name]}",
                "--data-dir", os.path.join(self.work, name),
                "--models-dir", MODELS,
                "--model", "smollm2-135m",
                # Turns move between replicas and are compared with a one-replica run:
                # bit-exact reuse, so that a restored state answers as a resident one does.
                "--exact",
                "--database-url", self.pg_url,
                "--replica-id", name,
                "--lease-secs", str(LEASE_S),
                "--files-dir", os.path.join(self.work, "files"),
                "--kv-dir", os.path.join(self.work, "kv"),
                "--signing-key", "scale-test-signing-key",
                "--threads", "1",
                "--parallel", "2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def healthy(self, port):
        try:
            return call(port, "GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def wait(self, name):
        until(f"replica {name} up", 300, lambda: self.healthy(self.ports[name]), every=0.2)

    def kill9(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def pg(self, *args):
        return subprocess.check_output(
            ["bash", os.path.join(REPO, "scripts/pg.sh"), *args], text=True
        ).strip()

    def close(self):
        stop_all([*self.procs.values(), self.haproxy])
        subprocess.run(["bash", os.path.join(REPO, "scripts/pg.sh"), "stop", self.pg_dir])


def create(port, prompt, prev=None, max_tokens=16, **extra):
    body = {
        "model": "gemini-3-flash-preview",
        "input": prompt,
        "generation_config": {"temperature": 0, "max_output_tokens": max_tokens},
        **extra,
    }
    if prev:
        body["previous_interaction_id"] = prev
    s, v = call(port, "POST", "/v1beta/interactions", body)
    if s != 200:
        raise AssertionError(f"create: {s} {v}")
    return v


def answer(v):
    return "".join(
        c.get("text", "")
        for step in v.get("steps", [])
        if step.get("type") == "model_output"
        for c in step.get("content", [])
    )


def running_sequences(port):
    s, text = call(port, "GET", "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("localgem_running_sequences"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def seed_examples(cl):
    env = dict(os.environ)
    env.update(
        LOCALGEM_URL=f"http://127.0.0.1:{cl.lb}",
        CONFORMANCE_ONLY="/python-sdk3$",
        CONFORMANCE_NO_EXTRA="1",
        CONFORMANCE_SKIP_SETUP="1",
    )
    out = subprocess.run(
        ["bash", os.path.join(REPO, "tests/conformance/run.sh")],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    summary = [l for l in out.stdout.splitlines() if l.startswith("conformance:")]
    if out.returncode != 0:
        fails = [l for l in out.stdout.splitlines() if l.startswith("FAIL")]
        raise AssertionError(f"{summary} {fails[:5]} {out.stderr[-500:]}")
    assert summary and not summary[0].startswith("conformance: 0 passed"), (summary, out.stdout[-500:])
    return summary[0]


def chains_round_robin(cl, ids_out):
    a, b = cl.ports["a"], cl.ports["b"]
    reference = {}
    # Reference answers: each conversation on one replica.
    for c in range(10):
        prev = None
        for t in range(6):
            v = create(a, f"Conversation {c}, turn {t}: name a fruit and a color.", prev)
            reference[(c, t)] = (answer(v), v["usage"]["total_input_tokens"])
            prev = v["id"]
    # The same conversations, every turn on the other replica from the one before. Each turn
    # must see exactly the history the one-replica run saw (the same prompt tokens), and give
    # the same greedy answer. A conversation whose answer flips at a near-tie (prefill batch
    # shapes round differently; see the README) has a different history from there on, so it
    # is compared up to that turn; more than a few such flips fail.
    flips = []
    for c in range(10):
        prev, last_input, same = None, 0, True
        for t in range(6):
            port = [a, b][(c + t) % 2]
            v = create(port, f"Conversation {c}, turn {t}: name a fruit and a color.", prev)
            assert v["status"] in ("completed", "incomplete"), v
            used = v["usage"]["total_input_tokens"]
            assert used > last_input, f"turn {t} of {c} saw no history ({used} <= {last_input})"
            last_input = used + v["usage"]["total_output_tokens"]
            ref = reference[(c, t)]
            if same:
                assert used == ref[1], f"turn {t} of {c}: {used} prompt tokens, one replica {ref[1]}"
                if answer(v) != ref[0]:
                    flips.append((c, t, answer(v), ref[0]))
                    same = False
            if prev:
                assert v["id"][3:14] == prev[3:14], "the conversation key was not inherited"
            prev = v["id"]
            ids_out.append(prev)
    assert len(flips) <= 3, f"{len(flips)} answers differ from one-replica answers: {flips[:3]}"
    # GET of every id is the same on both replicas.
    for i in ids_out:
        sa, va = call(a, "GET", f"/v1beta/interactions/{i}")
        sb, vb = call(b, "GET", f"/v1beta/interactions/{i}")
        assert sa == sb == 200 and va == vb, f"{i}: {sa} {sb}"
    return (f"60 turns round robin saw the one-replica prompts; {len(flips)} near-tie flips "
            f"{[(c, t) for c, t, *_ in flips]}; {len(ids_out)} GETs identical on both")


def sigkill_owner(cl):
    a, b = cl.ports["a"], cl.ports["b"]
    body = {
        "model": "gemini-3-flash-preview",
        "input": "Tell me a very long story about a lighthouse keeper.",
        "generation_config": {"temperature": 0.8, "max_output_tokens": 2000},
        "stream": True,
    }
    # The client reads a dozen deltas and is still connected when A dies.
    c, r = send(a, "POST", "/v1beta/interactions", body, timeout=60)
    first = []
    for raw in r:
        line = raw.decode().strip()
        if line.startswith("data: {"):
            first.append(json.loads(line[6:]))
            if len([e for e in first if text_of([e])]) >= 12:
                break
    id_ = first[0]["interaction"]["id"]
    last = first[-1]["event_id"]
    # B runs one of its own meanwhile.
    bg = create(b, "Count from one to two hundred.", max_tokens=600, background=True)
    conv = create(a, "Remember the word lighthouse.")
    cl.kill9("a")
    c.close()
    began = time.time()
    rest = stream(b, "GET", f"/v1beta/interactions/{id_}?stream=true&last_event_id={last}",
                  timeout=LEASE_S * 6)
    took = time.time() - began
    end = rest[-1]["event_type"] if rest else None
    assert end in ("error", "interaction.completed"), f"the stream ended with {end}"
    s, v = call(b, "GET", f"/v1beta/interactions/{id_}")
    assert v["status"] == "failed", v["status"]
    # Through the load balancer, the dead replica's conversation goes on elsewhere.
    s, v = call(cl.lb, "POST", "/v1beta/interactions", {
        "model": "gemini-3-flash-preview", "input": "Which word?",
        "previous_interaction_id": conv["id"],
        "generation_config": {"temperature": 0, "max_output_tokens": 8}})
    assert s == 200 and v["status"] in ("completed", "incomplete"), (s, v)
    # A comes back: B's run goes on untouched.
    cl.start("a")
    cl.wait("a")
    s, v = call(b, "GET", f"/v1beta/interactions/{bg['id']}")
    # Untouched: still running, or ended on its own (its 600-token cap counts: it may reach
    # it before A is back, on a fast machine or where speculation is on).
    assert v["status"] in ("in_progress", "completed", "incomplete"), v
    until("B's run ends", 120, lambda: call(b, "GET", f"/v1beta/interactions/{bg['id']}")[1]["status"] != "in_progress", every=0.5)
    s, v = call(b, "GET", f"/v1beta/interactions/{bg['id']}")
    assert v["status"] in ("completed", "incomplete"), v["status"]
    return f"resumed on B: {len(rest)} more events ending in {end} after {took:.1f} s (lease {LEASE_S} s)"


def cancel_and_delete_elsewhere(cl):
    a, b = cl.ports["a"], cl.ports["b"]
    notes = []
    for how in ("cancel", "delete"):
        v = create(a, "Write a long essay about rivers.", max_tokens=3000,
                   background=True, generation_config={"temperature": 0.8, "max_output_tokens": 3000})
        id_ = v["id"]
        until("A generating", 30, lambda: running_sequences(a) >= 1)
        began = time.time()
        if how == "cancel":
            s, r = call(b, "POST", f"/v1beta/interactions/{id_}/cancel")
            assert s == 200 and r["status"] == "cancelled", (s, r)
        else:
            s, r = call(b, "DELETE", f"/v1beta/interactions/{id_}")
            assert s == 200, (s, r)
        until("A stopped", 2.0, lambda: running_sequences(a) == 0, every=0.02)
        notes.append(f"{how} {time.time() - began:.2f} s")
    return ", ".join(notes)


def postgres_restart(cl, finished):
    a, b = cl.ports["a"], cl.ports["b"]
    result = {}

    def run():
        body = {"model": "gemini-3-flash-preview", "input": "Describe the sea in detail.",
                "generation_config": {"temperature": 0, "max_output_tokens": 300}, "stream": True}
        result["events"] = stream(a, "POST", "/v1beta/interactions", body)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    cl.pg("stop", cl.pg_dir)
    s1, v1 = call(b, "GET", f"/v1beta/interactions/{finished[0]}")
    s2, v2 = call(a, "POST", "/v1beta/interactions", {"model": "gemini-3-flash-preview", "input": "hi"})
    time.sleep(1.0)
    cl.pg(cl.pg_dir)
    assert s1 == 503 and v1["error"]["status"] == "UNAVAILABLE", (s1, v1)
    assert s2 == 503, (s2, v2)
    t.join(180)
    evs = result.get("events") or []
    assert evs and evs[-1]["event_type"] == "interaction.completed", evs[-1:] or "no events"
    id_ = evs[0]["interaction"]["id"]
    s, v = call(b, "GET", f"/v1beta/interactions/{id_}")
    assert s == 200 and v["status"] in ("completed", "incomplete"), (s, v.get("status"))
    assert answer(v) == text_of(evs), "the stored answer differs from the streamed one"
    lost = [i for i in finished if call(b, "GET", f"/v1beta/interactions/{i}")[0] != 200]
    assert not lost, f"lost {lost}"
    return f"503 while down; the run that spanned the restart completed and was saved; {len(finished)} earlier ones all there"


def upload_outlives_file(cl):
    lb = cl.lb
    data = b"The treasure is buried under the old oak tree."
    c = http.client.HTTPConnection("127.0.0.1", lb, timeout=60)
    c.request("POST", "/upload/v1beta/files", body=json.dumps({"file": {"display_name": "t.txt"}}),
              headers={"x-goog-api-key": KEY, "content-type": "application/json",
                       "x-goog-upload-protocol": "resumable", "x-goog-upload-command": "start",
                       "x-goog-upload-header-content-length": str(len(data)),
                       "x-goog-upload-header-content-type": "text/plain"})
    r = c.getresponse()
    r.read()
    url = r.getheader("x-goog-upload-url")
    path = url.split(str(lb), 1)[1]
    c.request("POST", path, body=data, headers={"x-goog-upload-command": "upload, finalize",
                                                 "x-goog-upload-offset": "0"})
    r = c.getresponse()
    reply = json.loads(r.read())
    f = reply.get("file", reply)
    assert "uri" in f, reply
    first = create(lb, [{"type": "text", "text": "Where is the treasure?"},
                        {"type": "document", "uri": f["uri"], "mime_type": "text/plain"}])
    s, _ = call(lb, "DELETE", f"/v1beta/{f['name']}")
    assert s == 200
    for port in cl.ports.values():
        v = create(port, "Say it again.", first["id"])
        assert v["status"] in ("completed", "incomplete"), v
        assert v["usage"]["total_input_tokens"] > first["usage"]["total_input_tokens"]
    return "both replicas continued it after the file was deleted"


def bench(cl):
    a, b, lb = cl.ports["a"], cl.ports["b"], cl.lb
    rows = []
    for mode in ("affinity (HAProxy)", "round robin (alternating replicas)"):
        cached = inputs = 0
        ttfts = {}
        for c in range(4):
            prev = None
            for t in range(10):
                port = lb if mode.startswith("affinity") else [a, b][(c + t) % 2]
                body = {"model": "gemini-3-flash-preview", "stream": True,
                        "input": f"Bench {mode[:3]} conversation {c}, turn {t}: tell me one fact about the number {t}.",
                        "generation_config": {"temperature": 0, "max_output_tokens": 24}}
                if prev:
                    body["previous_interaction_id"] = prev
                began = time.time()
                first = {}

                def on(e):
                    if "t" not in first and text_of([e]):
                        first["t"] = time.time() - began
                    return False
                evs = stream(port, "POST", "/v1beta/interactions", body, on_event=on)
                prev = evs[0]["interaction"]["id"]
                u = evs[-1]["interaction"]["usage"]
                cached += u.get("total_cached_tokens", 0)
                inputs += u["total_input_tokens"]
                ttfts.setdefault(t, []).append(first.get("t", time.time() - began))
        per_turn = [sum(v) / len(v) * 1000 for _, v in sorted(ttfts.items())]
        rows.append((mode, cached / max(inputs, 1), per_turn))
    print("| routing | cached / input tokens | mean TTFT per turn 1..10 (ms) |")
    print("|---|---|---|")
    for mode, ratio, per_turn in rows:
        print(f"| {mode} | {ratio:.2f} | {' '.join(f'{x:.0f}' for x in per_turn)} |")
    # GET latency through the load balancer at 200 requests/s.
    ids = [create(lb, f"get bench {i}", max_tokens=4)["id"] for i in range(20)]
    lat = []
    lock = threading.Lock()
    conns = threading.local()

    def one(i):
        c = getattr(conns, "c", None)
        if c is None:
            c = conns.c = http.client.HTTPConnection("127.0.0.1", lb, timeout=10)
        t0 = time.perf_counter()
        c.request("GET", f"/v1beta/interactions/{ids[i % len(ids)]}", headers={"x-goog-api-key": KEY})
        r = c.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        with lock:
            lat.append((r.status, dt))

    from concurrent.futures import ThreadPoolExecutor
    n, rate = 2000, 200
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    ok = sorted(dt for s, dt in lat if s == 200)
    p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] * 1000  # noqa: E731
    print()
    print(f"GET through HAProxy at {rate}/s for {n / rate:.0f} s: {len(ok)}/{n} ok, "
          f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {ok[-1] * 1000:.2f} ms")


def main():
    work = tempfile.mkdtemp(prefix="localgem-scale.")
    os.chmod(work, 0o755)  # the PostgreSQL cluster runs as its own user
    cl = None
    try:
        cl = Cluster(work)
        if "--bench" in sys.argv:
            bench(cl)
            return 0
        finished = []
        if os.environ.get("SCALE_NO_SEEDS") != "1":
            check("seed examples (Python SDK) through HAProxy", lambda: seed_examples(cl))
        check("10 chains x 6 turns round robin across replicas", lambda: chains_round_robin(cl, finished))
        check("cancel and DELETE sent to the replica that does not run it", lambda: cancel_and_delete_elsewhere(cl))
        check("a conversation outlives its uploaded file", lambda: upload_outlives_file(cl))
        check("PostgreSQL restarted mid-run", lambda: postgres_restart(cl, finished or ["missing"]))
        check("SIGKILL the owner mid-stream, resume on the other, restart it", lambda: sigkill_owner(cl))
        # Nothing is left in progress once the leases are over.
        def none_left():
            time.sleep(LEASE_S * 1.5)
            out = subprocess.check_output(
                ["/usr/lib/postgresql/15/bin/psql", cl.pg_url, "-tAc",
                 "SELECT count(*) FROM interactions WHERE status = 'in_progress'"], text=True).strip()
            assert out == "0", f"{out} interactions still in_progress"
        check("no interaction left in_progress after the lease time", none_left)
        if failures:
            # What the replicas were doing, for the failures above.
            for name in ("a", "b"):
                path = os.path.join(work, f"{name}.log")
                if os.path.exists(path):
                    with open(path, encoding="utf-8", errors="replace") as f:
                        tail = f.readlines()[-40:]
                    print(f"# last lines of replica {name}'s log:", flush=True)
                    print("".join(tail).replace("\x1b", ""), end="", flush=True)
        print(f"scale: {len(failures)} failed", flush=True)
        return 1 if failures else 0
    finally:
        if cl:
            cl.close()
        if os.environ.get("SCALE_KEEP") == "1":
            print(f"# work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
