#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub, for tests/hub: serves a directory of model
repositories in the hub's URL layout and headers, so `localgem pull` runs against it with
HF_ENDPOINT and never against the real hub.

    ROOT/OWNER/NAME/<files>   ->   GET /api/models/OWNER/NAME[/revision/REV][?blobs=true]
                                   GET|HEAD /OWNER/NAME/resolve/REV/<file>   (Range: bytes=a-b)

A repository's commit is a hash of its file names and sizes. Large files (*.gguf) carry the
LFS fields (sha256 and size) in the listing and `X-Linked-Etag`/`X-Linked-Size` on downloads,
as the hub sends them. Faults for the tests:
  --throttle BPS       send file bodies at about BPS bytes a second
  --corrupt NAME       serve NAME with one byte changed (the listing keeps the true sha256)
Every request is appended to --log as `METHOD PATH RANGE`, and `DONE PATH RANGE` when a
body was sent whole.
"""
import argparse
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

ARGS = None
LOCK = threading.Lock()
SHA_CACHE = {}


def log(line):
    if ARGS.log:
        with LOCK, open(ARGS.log, "a") as f:
            f.write(line + "\n")


def sha256_of(path):
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime)
    with LOCK:
        if key in SHA_CACHE:
            return SHA_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    with LOCK:
        SHA_CACHE[key] = h.hexdigest()
    return SHA_CACHE[key]


def repo_files(repo_dir):
    out = []
    for base, _, names in os.walk(repo_dir, followlinks=True):
        for n in names:
            full = os.path.join(base, n)
            out.append(os.path.relpath(full, repo_dir))
    return sorted(out)


def commit_of(repo_dir):
    h = hashlib.sha1()
    for name in repo_files(repo_dir):
        h.update(f"{name}:{os.path.getsize(os.path.join(repo_dir, name))}\n".encode())
    return h.hexdigest()


def is_lfs(name):
    return name.lower().endswith(".gguf")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def send_json(self, status, doc, extra=None):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def repo_dir(self, owner, name):
        d = os.path.join(ARGS.root, owner, name)
        return d if os.path.isdir(d) else None

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        log(f"{self.command} {url.path} {self.headers.get('Range', '-')}")
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            return self.listing(parts[2], parts[3])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(parts[0], parts[1], "/".join(parts[4:]))
        self.send_json(404, {"error": "Not found"})

    def listing(self, owner, name):
        d = self.repo_dir(owner, name)
        if d is None:
            return self.send_json(404, {"error": "Repository not found"},
                                  {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for f in repo_files(d):
            size = os.path.getsize(os.path.join(d, f))
            s = {"rfilename": f, "size": size}
            if is_lfs(f):
                s["lfs"] = {"sha256": sha256_of(os.path.join(d, f)), "size": size,
                            "pointerSize": 134}
            siblings.append(s)
        self.send_json(200, {"id": f"{owner}/{name}", "modelId": f"{owner}/{name}",
                             "sha": commit_of(d), "siblings": siblings})

    def resolve(self, owner, name, path):
        d = self.repo_dir(owner, name)
        if d is None:
            return self.send_json(404, {"error": "Repository not found"},
                                  {"X-Error-Code": "RepoNotFound"})
        full = os.path.join(d, path)
        if ".." in path.split("/") or not os.path.isfile(full):
            return self.send_json(404, {"error": "Entry not found"},
                                  {"X-Error-Code": "EntryNotFound"})
        size = os.path.getsize(full)
        start, stop, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else 0
            stop = min(int(b), size - 1) if b else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", commit_of(d))
        if is_lfs(path):
            sha = sha256_of(full)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(size))
        else:
            self.send_header("ETag", f'"{hashlib.sha1(open(full, "rb").read()).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.send_header("Content-Length", str(stop - start + 1))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "HEAD":
            return
        corrupt = os.path.basename(path) in ARGS.corrupt
        with open(full, "rb") as f:
            f.seek(start)
            left, pos = stop - start + 1, start
            t0, sent = time.monotonic(), 0
            while left > 0:
                block = bytearray(f.read(min(left, 64 << 10)))
                if not block:
                    break
                if corrupt and pos <= 1000 < pos + len(block):
                    block[1000 - pos] ^= 0xFF
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return
                left -= len(block)
                pos += len(block)
                sent += len(block)
                if ARGS.throttle:
                    ahead = sent / ARGS.throttle - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        log(f"DONE {urlsplit(self.path).path} {self.headers.get('Range', '-')}")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", default="")
    ap.add_argument("--throttle", type=float, default=0)
    ap.add_argument("--corrupt", action="append", default=[])
    ARGS = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
