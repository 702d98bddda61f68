#!/usr/bin/env python3
"""Load on loopback: many concurrent clients against one localgem with a small queue.

Shows what happens past capacity: requests beyond `--parallel` running plus `--max-queue`
waiting get 429 `RESOURCE_EXHAUSTED` with `Retry-After` at once, instead of piling up; the
server's memory (VmRSS from /proc) stays flat. Prints a Markdown table.

    python3 bench/load.py --localgem target/release/localgem --models-dir ~/.cache/localgem/models
"""
import argparse
import collections
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--localgem", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=8, help="per client")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-queue", type=int, default=8)
    args = ap.parse_args()

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    data = tempfile.mkdtemp(prefix="load-")
    proc = subprocess.Popen(
        [args.localgem, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data,
         "--models-dir", args.models_dir, "--parallel", str(args.parallel),
         "--max-queue", str(args.max_queue), "--max-running-per-key", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, LOCALGEM_PYTHON="false", LOCALGEM_LOG="warn"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
            break
        except Exception:
            time.sleep(0.5)
    rss0 = rss_mb(proc.pid)
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(proc.pid))
            time.sleep(0.05)

    counts = collections.Counter()
    latencies = collections.defaultdict(list)
    retry_after = set()
    lock = threading.Lock()

    def client(k):
        for i in range(args.requests):
            body = json.dumps({"model": "gemini-3-flash-preview",
                               "input": f"Client {k} request {i}: write two sentences about the sea.",
                               "generation_config": {"max_output_tokens": 32, "temperature": 0}}).encode()
            req = urllib.request.Request(f"{url}/v1beta/interactions", data=body, method="POST",
                                         headers={"content-type": "application/json",
                                                  "x-goog-api-key": f"load-{k}"})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    r.read()
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
                if e.headers.get("retry-after"):
                    with lock:
                        retry_after.add(e.headers["retry-after"])
                e.read()
            dt = time.perf_counter() - t0
            with lock:
                counts[code] += 1
                latencies[code].append(dt)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    rss1 = rss_mb(proc.pid)
    proc.terminate()
    proc.wait(timeout=60)

    def median(v):
        v = sorted(v)
        return v[len(v) // 2] if v else float("nan")

    total = sum(counts.values())
    print(f"{args.clients} clients x {args.requests} requests, --parallel {args.parallel}, "
          f"--max-queue {args.max_queue}, {wall:.1f} s")
    print()
    print("| answer | count | median latency (s) |")
    print("|---|---|---|")
    for code in sorted(counts):
        print(f"| {code} | {counts[code]} of {total} | {median(latencies[code]):.3f} |")
    print()
    print(f"Retry-After on 429: {sorted(retry_after)}; server RSS: {rss0:.0f} MB idle, "
          f"{peak[0]:.0f} MB peak, {rss1:.0f} MB after")


if __name__ == "__main__":
    main()
