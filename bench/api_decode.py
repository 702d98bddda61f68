#!/usr/bin/env python3
"""Single-stream decode speed of a running localgem, measured through the API.

Streams `--runs` greedy generations of `--tokens` tokens and reports, per run and as the
median: time to first token, decode tok/s ((output tokens - 1) / (last delta - first delta)),
and prompt tokens. Standard library only.

    python3 bench/api_decode.py --url http://127.0.0.1:8080 --model smollm2-135m
"""
import argparse
import json
import statistics
import time
import urllib.request


def one(url, model, tokens, prompt):
    body = json.dumps({
        "model": model, "input": prompt, "stream": True,
        "generation_config": {"temperature": 0, "max_output_tokens": tokens},
    }).encode()
    req = urllib.request.Request(f"{url}/v1beta/interactions", data=body, method="POST",
                                 headers={"content-type": "application/json", "x-goog-api-key": "bench"})
    t0 = time.perf_counter()
    first = last = None
    usage = None
    with urllib.request.urlopen(req, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev["event_type"] == "step.delta":
                now = time.perf_counter()
                first = first or now
                last = now
            elif ev["event_type"] == "interaction.completed":
                usage = ev["interaction"]["usage"]
    out = usage["total_output_tokens"]
    decode = (out - 1) / (last - first) if last and first and last > first else float("nan")
    return {"ttft_s": first - t0, "decode_tok_s": decode, "output_tokens": out,
            "input_tokens": usage["total_input_tokens"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="gemini-3-flash-preview")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt", default="Write a long, detailed essay about the history of computing.")
    a = ap.parse_args()
    one(a.url, a.model, 8, a.prompt)  # warm-up
    runs = [one(a.url, a.model, a.tokens, a.prompt) for _ in range(a.runs)]
    for r in runs:
        print(json.dumps(r))
    med = statistics.median(r["decode_tok_s"] for r in runs)
    ttft = statistics.median(r["ttft_s"] for r in runs)
    print(f"{a.model}: median decode {med:.1f} tok/s, median TTFT {ttft * 1000:.0f} ms "
          f"({runs[0]['input_tokens']} prompt tokens, {a.tokens} output tokens, {a.runs} runs)")


if __name__ == "__main__":
    main()
