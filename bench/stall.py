#!/usr/bin/env python3
"""Do live streams stall while new work is prepared? Inter-token latency (ITL) of 4 live
streams while new ~2,000-token prompts arrive and conversations are restored from disk.

One localgem (bundled model, --parallel 8, --kv-slots 8):
1. primes 12 stored conversations with ~1,500-token prompts, more than the slots hold, so
   the first ones are evicted from memory and kept only on disk;
2. starts 4 greedy streams of 300 tokens and measures their ITL for 2 s (quiet window);
3. then, while they decode, sends 3 new ~2,000-token prompts and continues 3 of the evicted
   conversations (restores from disk), one every 0.6 s, and measures the streams' ITL from the
   first of those to 1 s after the last one finished (busy window).
Reports p50/p99/max ITL per window, the tokens the streams got in the busy window, how long
each new prompt took to answer (its one token: the time to first token), and how many
restores `/metrics` counted. The server takes LOCALGEM_* settings from the environment (e.g.
LOCALGEM_MAX_STEP_MS=0 for steps bounded by tokens only).

    python3 bench/stall.py --localgem PATH --models-dir DIR [--model smollm2-135m] [--runs 3]
"""
import argparse
import json
import os
import random
import re
import statistics
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, sse_events, words)


def post(srv, body, stream=False, timeout=900):
    req = urllib.request.Request(
        f"{srv.url}/v1beta/interactions", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "x-goog-api-key": "bench"})
    return urllib.request.urlopen(req, timeout=timeout)


def stream_times(srv, prompt, n, out, i):
    """Stream one greedy answer; append (time of each text delta) to out[i]."""
    body = {"model": srv.model, "input": prompt, "stream": True, "store": False,
            "generation_config": {"temperature": 0, "max_output_tokens": n}}
    with post(srv, body) as resp:
        for ev in bench.sse_events(resp):
            if ev["event_type"] == "step.delta" and ev["delta"].get("text"):
                out[i].append(time.perf_counter())


def once(srv, body, took=None):
    began = time.perf_counter()
    with post(srv, body) as resp:
        out = json.load(resp)
    if took is not None:
        took.append(time.perf_counter() - began)
    return out


def restores(srv):
    with urllib.request.urlopen(f"{srv.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.findall(r'^localgem_kv_restores_total\{[^}]*\} (\d+)', text, re.M)
    return sum(int(x) for x in m)


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def gaps(times, lo, hi):
    out = []
    for ts in times:
        for a, b in zip(ts, ts[1:]):
            if lo <= b <= hi:
                out.append((b - a) * 1000)
    return out


def run(args, seed):
    rng = random.Random(seed)
    srv = bench.Server("localgem", args, args.model, 8)
    srv.start()
    try:
        convs = []
        for c in range(12):
            text = f"{c} {bench.words(1, rng)} Remember this list: " + bench.words(1300, rng)
            r = once(srv, {"model": args.model, "input": text,
                           "generation_config": {"temperature": 0, "max_output_tokens": 8}})
            convs.append(r["id"])
        before = restores(srv)
        times = [[] for _ in range(4)]
        live = [threading.Thread(target=stream_times, args=(
            srv, f"Story {i} ({bench.words(1, rng)}): write a long tale about a travelling "
            "musician and the towns she visits.", 300, times, i)) for i in range(4)]
        for t in live:
            t.start()
        time.sleep(0.5)
        quiet_lo = time.perf_counter()
        time.sleep(2.0)
        quiet_hi = busy_lo = time.perf_counter()
        jobs, fresh_s, cont_s = [], [], []
        for k in range(3):
            fresh = {"model": args.model, "store": False,
                     "input": f"{k} {bench.words(1, rng)} Summarise: " + bench.words(1800, rng),
                     "generation_config": {"temperature": 0, "max_output_tokens": 1}}
            cont = {"model": args.model, "previous_interaction_id": convs[k],
                    "input": "What was the third word?",
                    "generation_config": {"temperature": 0, "max_output_tokens": 1}}
            for body, took in ((fresh, fresh_s), (cont, cont_s)):
                t = threading.Thread(target=once, args=(srv, body, took))
                t.start()
                jobs.append(t)
                time.sleep(0.6)
        for t in jobs:
            t.join()
        busy_hi = time.perf_counter() + 1.0
        for t in live:
            t.join()
        after = restores(srv)
        q, b = gaps(times, quiet_lo, quiet_hi), gaps(times, busy_lo, busy_hi)
        return {"quiet": {"n": len(q), "p50": pct(q, 50), "p99": pct(q, 99), "max": max(q)},
                "busy": {"n": len(b), "p50": pct(b, 50), "p99": pct(b, 99), "max": max(b)},
                "busy_window_s": busy_hi - busy_lo, "restores": after - before,
                "new_prompt_s": sorted(fresh_s), "continued_s": sorted(cont_s)}
    finally:
        srv.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--localgem", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    results = [run(args, seed) for seed in range(args.runs)]
    for r in results:
        print(json.dumps(r))
    med = lambda w, k: statistics.median(r[w][k] for r in results)  # noqa: E731
    print(f"| {args.model} | quiet ITL p50 {med('quiet', 'p50'):.1f} ms, p99 "
          f"{med('quiet', 'p99'):.1f} ms | busy ITL p50 {med('busy', 'p50'):.1f} ms, p99 "
          f"{med('busy', 'p99'):.1f} ms, max {med('busy', 'max'):.0f} ms | restores "
          f"{[r['restores'] for r in results]} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
