"""What the best draft-length policy could gain on the spec scenario's answers.

Takes the greedy answers of a running llama-server (token ids, `/completion` with
`return_tokens`) to the spec scenario's prompts, and the measured cost of a step that checks
k draft tokens (`examples/verify_probe.rs`: "1+k: all T ms", k = 0..8), and replays prompt
lookup (the engine's `speculate::lookup`: the latest earlier occurrence of the last 5..3
tokens) over each answer with:

* fixed draft lengths (every step drafts up to k tokens, whatever they cost), and
* an oracle that knows how many of a draft would be accepted and drafts exactly those when
  that step beats a plain one: no policy can do better with these drafts at these costs.

Prints the speed-up over decoding without drafts, per answer and the median (the spec
scenario reports the median of its answers).

    python3 bench/spec_bound.py --url http://127.0.0.1:8080 --costs 5.9,12.0,15.0,17.8,22.0,24.7,28.3,27.6,31.9
"""
import argparse
import importlib.util
import json
import os
import statistics
import urllib.request


def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())


def lookup(ctx, most, shortest=3, longest=5):
    n_ctx = len(ctx)
    for n in range(min(longest, n_ctx - 1), shortest - 1, -1):
        key = ctx[n_ctx - n:]
        for start in range(n_ctx - n - 1, -1, -1):
            if ctx[start:start + n] == key:
                draft = ctx[start + n:start + n + most]
                if draft:
                    return draft
    return []


def replay(prompt, out, cost, fixed=None):
    """Time to decode `out` after `prompt` (its first token already sampled), relative to no
    drafting; `fixed`: draft up to that many tokens every step, else the oracle."""
    ctx, i, t = list(prompt) + [out[0]], 1, 0.0
    while i < len(out):
        draft = lookup(ctx, fixed if fixed is not None else len(cost) - 1)
        kept = 0
        while kept < len(draft) and i + kept < len(out) and draft[kept] == out[i + kept]:
            kept += 1
        if fixed is None:
            # Draft exactly the tokens that will be kept, when that beats a plain step.
            if kept and (kept + 1) / cost[kept] <= 1 / cost[0]:
                kept = 0
            t += cost[kept]
        else:
            t += cost[len(draft)]
        ctx += out[i:i + kept + 1]
        i += kept + 1
    return (len(out) - 1) * cost[0] / t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="a llama-server serving the model")
    ap.add_argument("--costs", required=True,
                    help="ms of a step checking 0..K drafts, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cost = [float(c) for c in args.costs.split(",")]
    spec = importlib.util.spec_from_file_location(
        "bench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    answers = []
    for i in range(args.runs):
        for p in bench.SPEC_PROMPTS:
            msgs = [{"role": "user", "content": f"{bench.WORDS[i]} {i}. "
                     + p.format(doc=bench.DOCUMENT)}]
            prompt = post(args.url, "/apply-template", {"messages": msgs})["prompt"]
            ids = post(args.url, "/tokenize", {"content": prompt, "add_special": False,
                                               "parse_special": True})["tokens"]
            r = post(args.url, "/completion", {"prompt": ids, "temperature": 0,
                                                "n_predict": 256, "return_tokens": True,
                                                "cache_prompt": False})
            answers.append((ids, r["tokens"]))
    rows = [(f"draft up to {k}", k) for k in (2, 4, len(cost) - 1)] + [("oracle", None)]
    for name, k in rows:
        r = [replay(p, o, cost, k) for p, o in answers]
        print(f"{name:>14}: median {statistics.median(r):.2f}x  "
              + " ".join(f"{x:.2f}" for x in r))


if __name__ == "__main__":
    main()
