#!/usr/bin/env python3
"""Run the extracted seed examples against a live localgem server and check them.

Called by run.sh (stdlib only; any python3 >= 3.8 works).  Needs, in the
environment: GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY.

Every example runs UNCHANGED (see extract.py for the one allowed edit, the
curl host).  Python examples run once with the google-genai 3.x venv (default
path /v1) and once with the 2.x venv (default path /v1beta);
GOOGLE_GENAI_API_VERSION is never set.  JavaScript examples run with node from
the work dir, which has a node_modules symlink to the npm project so that
``import { GoogleGenAI } from "@google/genai"`` resolves.  REST examples run
with bash.

Output: one line per run, ``PASS name`` / ``FAIL name: reason`` /
``SKIP name: reason``.  Exit status is 1 if anything failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

# Variables that the multi-request REST examples assign; the REST wrapper dumps
# them after the example ran so that the intermediate responses (which the
# examples capture instead of printing) can be checked too.
REST_VARS = ("RESPONSE1", "INTERACTION_ID", "MODEL_STEPS", "HISTORY")

REST_WRAPPER = r'''
__ex="$1"; __dump="$2"
. "$__ex"
__rc=$?
for __v in %s; do
  if [ -n "${!__v+x}" ]; then printf '%%s' "${!__v}" > "$__dump/$__v"; fi
done
exit $__rc
''' % " ".join(REST_VARS)


class CheckFailed(Exception):
    pass


class BlankAnswer(CheckFailed):
    """The example ran and the server answered, but the answer's text is only whitespace.

    The media examples run against a projector with random weights (tests/vision): its
    image and audio embeddings mean nothing to the model, which then answers with
    whitespace alone about once in a hundred sampled answers. Such an example is run once
    more; blank twice is a failure."""


def tail(s: str, n: int = 300) -> str:
    s = " ".join(s.strip().split())
    return s if len(s) <= n else "..." + s[-n:]


def clean_env(base_url: str, api_key: str) -> dict:
    env = dict(os.environ)
    # Only these two may steer the examples; drop anything that could change
    # which server/version/key the SDKs use.
    for k in list(env):
        if k.upper() in ("GOOGLE_API_KEY", "GOOGLE_GENAI_API_VERSION", "GOOGLE_GENAI_USE_VERTEXAI",
                         "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_VERTEX_BASE_URL",
                         "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NODE_OPTIONS"):
            env.pop(k)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["GOOGLE_GEMINI_BASE_URL"] = base_url
    env["GEMINI_API_KEY"] = api_key
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def clean_stderr(err: str) -> str:
    # Drop curl's progress meter (the examples call curl without -s).
    keep = []
    for line in re.split(r"\r\n|\n|\r", err):
        if "% Total" in line or "Dload" in line or re.match(r"^\s*\d+\s+[\d.]+[kMG]?\s+\d+", line):
            continue
        keep.append(line)
    return "\n".join(keep)


def run(cmd, cwd, env, timeout, save_as=None):
    # Own process group, so that a timeout also kills grandchildren (curl).
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        err = clean_stderr(err.decode("utf-8", "replace"))
        if save_as:
            save_as(out.decode("utf-8", "replace"), err)
        text = out.decode("utf-8", "replace")
        raise CheckFailed(f"timed out after {timeout:g}s; {len(text)} characters of stdout"
                          + (f", ending: {tail(text, 120)}" if text.strip() else "")
                          + (f"; stderr: {tail(err)}" if err.strip() else ""))
    out, err = out.decode("utf-8", "replace"), clean_stderr(err.decode("utf-8", "replace"))
    if save_as:
        save_as(out, err)
    return p.returncode, out, err


# --------------------------------------------------------------------------- checks

def check_sdk_output(code: str, out: str) -> None:
    """Checks for the Python/JS examples: something printed, and each printed
    answer non-empty (not None/undefined)."""
    if not out.strip():
        raise BlankAnswer("stdout is empty (no answer text printed)")
    for line in out.splitlines():
        if line.strip() in ("None", "undefined", "null"):
            raise CheckFailed(f"printed {line.strip()!r} instead of answer text")
    labels = re.findall(r"[\"'](Response \d+:)[\"']", code)
    if labels:
        pattern = "|".join(re.escape(l) for l in labels)
        pos = {}
        for m in re.finditer(pattern, out):
            pos.setdefault(m.group(0), m.end())
        for lab in labels:
            if lab not in pos:
                raise CheckFailed(f"{lab!r} line missing from stdout")
        order = sorted(pos.items(), key=lambda kv: kv[1])
        for i, (lab, start) in enumerate(order):
            end = len(out) if i + 1 == len(order) else out.rfind(order[i + 1][0], 0, order[i + 1][1])
            seg = out[start:end].strip()
            if not seg or seg in ("None", "undefined", "null"):
                raise CheckFailed(f"answer after {lab!r} is empty ({seg!r})")


def last_text(doc, what: str) -> str:
    try:
        text = doc["steps"][-1]["content"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise CheckFailed(f"{what}: no steps[-1].content[0].text in {tail(json.dumps(doc), 200)}")
    if not isinstance(text, str):
        raise CheckFailed(f"{what}: steps[-1].content[0].text is not a string ({text!r})")
    if not text.strip():
        raise BlankAnswer(f"{what}: steps[-1].content[0].text is empty ({text!r})")
    return text


def parse_json(s: str, what: str):
    try:
        return json.loads(s)
    except ValueError as e:
        raise CheckFailed(f"{what} is not valid JSON ({e}): {tail(s, 200)!r}")


def check_error_envelope(doc, what: str, code: str) -> None:
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        raise CheckFailed(f"{what}: expected an error envelope, got {tail(json.dumps(doc), 200)}")
    if err.get("code") != code:
        raise CheckFailed(f"{what}: error.code is {err.get('code')!r}, expected {code!r}")
    if not isinstance(err.get("message"), str) or not err["message"]:
        raise CheckFailed(f"{what}: error.message missing or empty")


def check_sse(out: str, what: str) -> None:
    events = []  # (event_name or None, data string)
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", out):
        if not block.strip():
            continue
        name, data = None, []
        for line in re.split(r"\r\n|\n|\r", block):
            if line.startswith(":"):
                continue
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:][1:] if line[5:].startswith(" ") else line[5:])
        if data or name:
            events.append((name, "\n".join(data)))
    if not events:
        raise CheckFailed(f"{what}: no SSE events in stdout: {tail(out, 200)!r}")
    types, text = [], ""
    for name, data in events:
        if data == "[DONE]":
            types.append("[DONE]")
            continue
        try:
            ev = json.loads(data)
        except ValueError:
            raise CheckFailed(f"{what}: SSE data is not JSON: {tail(data, 200)!r}")
        et = ev.get("event_type") if isinstance(ev, dict) else None
        if not et:
            raise CheckFailed(f"{what}: SSE event without event_type: {tail(data, 200)!r}")
        if name is not None and name != et:
            raise CheckFailed(f"{what}: 'event: {name}' line but event_type {et!r}")
        if et == "error":
            raise CheckFailed(f"{what}: stream carried an error event: {tail(data, 200)}")
        if et == "step.delta" and isinstance(ev.get("delta"), dict) and ev["delta"].get("type") == "text":
            text += ev["delta"].get("text") or ""
        types.append(et)
    if not text.strip():
        raise BlankAnswer(f"{what}: no non-empty step.delta text event")
    for need in ("interaction.created", "interaction.completed"):
        if need not in types:
            raise CheckFailed(f"{what}: no {need} event")
    last_name, last_data = events[-1]
    if last_data != "[DONE]" or last_name not in (None, "done"):
        raise CheckFailed(f"{what}: stream does not end with 'event: done' / 'data: [DONE]'")
    if last_name != "done":
        raise CheckFailed(f"{what}: final [DONE] is not preceded by 'event: done'")


def post_raw(base: str, path: str, body: bytes, headers: dict, timeout: float):
    req = urllib.request.Request(base.rstrip("/") + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def check_rest(ex: dict, code: str, out: str, dump: dict, env: dict, timeout: float) -> str:
    stream = bool(re.search(r'"stream":\s*true', code))
    note = ""
    if "RESPONSE1" in dump:
        last_text(parse_json(dump["RESPONSE1"], "turn-1 response (RESPONSE1)"), "turn-1 response")
    if "INTERACTION_ID" in dump:
        iid = dump["INTERACTION_ID"]
        if not iid or iid == "null":
            raise CheckFailed(f"turn-1 id is empty ({iid!r})")

    if ex["slug"] == "stateless_history" and "HISTORY" in dump and not dump["HISTORY"].strip():
        # KNOWN SEED BUG (kept on purpose, the example must run unchanged): the
        # jq filter is built with broken shell quoting,
        #     "'"'"'$first_input + $model_steps + $second_input'"'"'"
        # which bash turns into the jq program  '"' +  + '"'  (the $vars are
        # expanded by the shell, to nothing), so jq fails to compile, HISTORY is
        # empty and the second curl sends the invalid JSON body
        #     {"model": "...", "store": false, "input": <nothing> }
        # The correct server behaviour is HTTP 400 with the error envelope
        #     {"error":{"message":"...","code":"invalid_request"}}
        # (not a 5xx, which the SDKs would retry, and not a hang).  curl prints
        # the body and exits 0.  So: turn 1 must be a valid answer (checked
        # above), turn 2 must print an invalid_request envelope, and replaying
        # the very same body must give status 400.
        doc = parse_json(out, "turn-2 response")
        check_error_envelope(doc, "turn-2 response (invalid JSON body, seed bug)", "invalid_request")
        body = ('{\n    "model": "gemini-3-flash-preview",\n    "store": false,\n    "input": '
                + dump["HISTORY"] + "\n  }").encode()
        status, text = post_raw(env["GOOGLE_GEMINI_BASE_URL"], "/v1beta/interactions", body, {
            "x-goog-api-key": env["GEMINI_API_KEY"], "Content-Type": "application/json",
            "Api-Revision": "2026-05-20"}, timeout)
        if status != 400:
            raise CheckFailed(f"replay of the invalid turn-2 body gave HTTP {status}, expected 400: {tail(text, 200)}")
        return "turn 2 got 400 invalid_request for the seed's broken jq quoting (expected)"

    if stream:
        check_sse(out, "stream output")
    else:
        last_text(parse_json(out, "response"), "response")
    return note


def upload_file(base: str, key: str, path: str, mime: str, timeout: float) -> str:
    """Upload a file with the Files API's resumable protocol; return its uri (what the REST
    image example tells its reader to do before running it)."""
    with open(path, "rb") as f:
        data = f.read()
    start = urllib.request.Request(
        base.rstrip("/") + "/upload/v1beta/files", method="POST",
        data=json.dumps({"file": {"display_name": os.path.basename(path)}}).encode(),
        headers={"x-goog-api-key": key, "Content-Type": "application/json",
                 "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                 "X-Goog-Upload-Header-Content-Length": str(len(data)),
                 "X-Goog-Upload-Header-Content-Type": mime})
    with urllib.request.urlopen(start, timeout=timeout) as r:
        url = r.headers["x-goog-upload-url"]
    put = urllib.request.Request(url, method="POST", data=data, headers={
        "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    with urllib.request.urlopen(put, timeout=timeout) as r:
        return json.load(r)["file"]["uri"]


def check_text_only_refusal(rc: int, out: str, err: str, kind: str = "image") -> None:
    """The image example (or its audio or video version) against a text-only model: it
    must fail with the API's 400 that names the modality (not a 5xx the SDK would retry,
    not a silent answer)."""
    if rc == 0:
        raise CheckFailed(f"the text-only server answered an {kind} request: {tail(out)}")
    if "400" not in err or f"cannot take {kind} input" not in err:
        raise CheckFailed(f"expected a 400 naming the {kind} modality; stderr: {tail(err)}")


# --------------------------------------------------------------------------- main

def save(work: str, name: str, out: str, err: str) -> None:
    base = os.path.join(work, name.replace("/", "__"))
    for ext, text in ((".out", out), (".err", err)):
        with open(base + ext, "w", encoding="utf-8") as f:
            f.write(text)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="dir with the extracted examples + manifest.json")
    ap.add_argument("--py3", required=True, help="python of the google-genai 3.x venv")
    ap.add_argument("--py2", required=True, help="python of the google-genai 2.x venv")
    ap.add_argument("--node", default="node")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("CONFORMANCE_TIMEOUT", 120)))
    ap.add_argument("--only", default=os.environ.get("CONFORMANCE_ONLY", ""),
                    help="regex; run only the examples whose name matches")
    ap.add_argument("--vision-url", default=os.environ.get("LOCALGEM_VISION_URL", ""),
                    help="a server whose default model takes images, for the image example")
    a = ap.parse_args()

    base = os.environ.get("GOOGLE_GEMINI_BASE_URL")
    key = os.environ.get("GEMINI_API_KEY")
    if not base or not key:
        print("runner: GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY must be set", file=sys.stderr)
        return 2
    env = clean_env(base, key)
    with open(os.path.join(a.work, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)

    failed = 0
    for ex in manifest:
        path = os.path.join(a.work, ex["file"])
        with open(path, encoding="utf-8") as f:
            code = f.read()
        if ex["language"] == "python":
            runs = [("python-sdk3", [a.py3, ex["file"]]), ("python-sdk2", [a.py2, ex["file"]])]
        elif ex["language"] == "javascript":
            runs = [("javascript", [a.node, ex["file"]])]
        else:
            runs = [("rest", None)]
        vision = ex.get("needs") == "vision"
        media = ex.get("media") or {"kind": "image", "file": "path/to/organ.jpg",
                                    "mime": "image/jpeg"}
        if vision and a.vision_url and ex["language"] == "python":
            runs.append(("python-sdk3-text-only-400", [a.py3, ex["file"]]))
        for flavour, cmd in runs:
            name = f"{ex['name']}/{flavour}"
            if a.only and not re.search(a.only, name):
                continue
            if ex.get("skip"):
                print(f"SKIP {name}: {ex['skip']}", flush=True)
                continue
            if vision and not a.vision_url:
                print(f"SKIP {name}: no server with a vision model (--vision-url)", flush=True)
                continue
            saver = (lambda o, e, _n=name: save(a.work, _n, o, e))
            ex_env = clean_env(a.vision_url, key) if vision else env

            def attempt() -> str:
                """Runs the example once and checks it; returns a note for the log."""
                note = ""
                if flavour.endswith("text-only-400"):
                    rc, out, err = run(cmd, a.work, env, a.timeout, saver)
                    check_text_only_refusal(rc, out, err, media["kind"])
                    note = f"the text-only model refused the {media['kind']} with 400"
                elif flavour == "rest":
                    script = path
                    if "YOUR_FILE_URI" in code:
                        uri = upload_file(a.vision_url, key, os.path.join(a.work, media["file"]),
                                          media["mime"], a.timeout)
                        script = os.path.join(a.work, ex["name"] + ".uploaded.sh")
                        with open(script, "w", encoding="utf-8") as f:
                            f.write(code.replace("YOUR_FILE_URI", uri))
                    dump_dir = os.path.join(a.work, ex["name"] + ".vars")
                    os.makedirs(dump_dir, exist_ok=True)
                    for v in REST_VARS:
                        if os.path.exists(os.path.join(dump_dir, v)):
                            os.remove(os.path.join(dump_dir, v))
                    rc, out, err = run(["bash", "--noprofile", "--norc", "-c", REST_WRAPPER,
                                        "rest-example", script, dump_dir], a.work, ex_env, a.timeout, saver)
                    if rc != 0:
                        raise CheckFailed(f"exit code {rc}; stderr: {tail(err)}")
                    dump = {}
                    for v in REST_VARS:
                        p = os.path.join(dump_dir, v)
                        if os.path.exists(p):
                            with open(p, encoding="utf-8", errors="replace") as f:
                                dump[v] = f.read()
                    if not out.strip():
                        raise BlankAnswer(f"stdout is empty; stderr: {tail(err)}")
                    note = check_rest(ex, code, out, dump, ex_env, a.timeout)
                else:
                    rc, out, err = run(cmd, a.work, ex_env, a.timeout, saver)
                    if rc != 0:
                        raise CheckFailed(f"exit code {rc}; stderr: {tail(err)}")
                    check_sdk_output(code, out)
                return note

            tries = 2 if vision else 1
            for n in range(1, tries + 1):
                try:
                    note = attempt()
                    if note:
                        print(f"# {name}: {note}", flush=True)
                    print(f"PASS {name}", flush=True)
                    break
                except BlankAnswer as e:
                    if n < tries:
                        print(f"# {name}: blank answer ({e}); running it once more (see BlankAnswer)", flush=True)
                        continue
                    failed += 1
                    print(f"FAIL {name}: {e}" + (" (blank twice)" if tries > 1 else ""), flush=True)
                except (CheckFailed, OSError) as e:
                    failed += 1
                    print(f"FAIL {name}: {e}", flush=True)
                    break
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
