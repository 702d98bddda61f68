#!/usr/bin/env python3
"""`localgem pull` against tests/hub/mirror.py (never the real hub). Called by run.sh:

    check.py --bin LOCALGEM --root MIRROR_ROOT --work DIR --models MODELS_DIR

Prints PASS/FAIL lines and `hub: N passed, M failed`; exits 1 on any failure.
"""
import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

A = None
RESULTS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Mirror:
    def __init__(self, *extra):
        self.port = free_port()
        self.log = os.path.join(A.work, f"mirror-{self.port}.log")
        open(self.log, "w").close()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), "mirror.py"),
             "--root", A.root, "--port", str(self.port), "--log", self.log, *extra])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the mirror did not start")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def lines(self):
        with open(self.log) as f:
            return [l.rstrip("\n") for l in f]

    def mark(self):
        return len(self.lines())

    def since(self, mark):
        return self.lines()[mark:]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def pull(ref, hf_home, endpoint, extra_env=None, check=False, timeout=300):
    env = dict(os.environ)
    for k in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "RUST_BACKTRACE"):
        env.pop(k, None)
    env.update({"HF_HOME": hf_home, "HF_ENDPOINT": endpoint, "NO_COLOR": "1"})
    env.update(extra_env or {})
    p = subprocess.run([A.bin, "pull", ref], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"pull {ref} failed ({p.returncode}): {p.stderr[-1500:]}")
    return p


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def small_tmpfs(name, size):
    """A tmpfs of `size` under the work dir, to fill (the caller unmounts it)."""
    mnt = os.path.join(A.work, name)
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"cannot mount a small tmpfs to fill: {r.stderr.strip()}")
    return mnt


def fill_disk(mnt):
    """Claims all but about 1 MB of `mnt`'s free space in filler files, and returns them."""
    fillers = []
    for i in range(100):
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        if free < (2 << 20):
            return fillers
        path = os.path.join(mnt, f"filler{i}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        fillers.append(path)
        try:
            os.posix_fallocate(fd, 0, free - (1 << 20))
        except OSError:
            pass  # the pull took some of it first; look again
        finally:
            os.close(fd)
    raise AssertionError(f"could not fill {mnt}: {os.statvfs(mnt)}")


def check(name):
    def wrap(fn):
        try:
            fn()
            RESULTS.append((name, None))
            print(f"PASS hub/{name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is a test failure
            RESULTS.append((name, e))
            print(f"FAIL hub/{name}: {e}", flush=True)
        return fn
    return wrap


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", required=True)
    A = ap.parse_args()
    gemma = os.path.join(A.models, "gemma-3-270m-q4_k_m.gguf")
    smol = os.path.join(A.models, "SmolLM2-135M-Instruct.Q4_1.gguf")
    proj = os.path.join(A.models, "test-vision", "mmproj-gemma-3-270m-test.gguf")
    home = os.path.join(A.work, "hf")
    m = Mirror()

    @check("pull-chooses-quant-and-projector")
    def _():
        p = pull("test-org/gemma-3-270m-it-GGUF:Q4_K_M", home, m.url, check=True)
        out = p.stdout.split()
        assert len(out) == 2, f"want the model and projector paths, got {out}"
        model, mmproj = out
        assert model.startswith(os.path.join(home, "hub", "models--test-org--gemma-3-270m-it-GGUF",
                                              "snapshots")), model
        assert model.endswith("gemma-3-270m-it-Q4_K_M.gguf"), model
        assert mmproj.endswith("mmproj-gemma-3-270m-it-F16.gguf"), mmproj
        assert sha256(model) == sha256(gemma), "the pulled model differs from the mirror's"
        assert sha256(mmproj) == sha256(proj), "the pulled projector differs"
        # Progress as plain lines when stderr is not a terminal.
        assert "gemma-3-270m-it-Q4_K_M.gguf: 50%" in p.stderr, p.stderr[-800:]
        # Other quantizations were not fetched.
        assert not any("Q8_0" in l for l in m.lines()), "fetched a file it was not asked for"

    @check("second-pull-downloads-nothing")
    def _():
        mark = m.mark()
        p = pull("test-org/gemma-3-270m-it-GGUF:Q4_K_M", home, m.url, check=True)
        reqs = m.since(mark)
        assert all("/resolve/" not in l for l in reqs), f"downloaded again: {reqs}"
        assert "nothing downloaded" in p.stderr, p.stderr

    @check("other-quant-and-default")
    def _():
        p = pull("test-org/gemma-3-270m-it-GGUF:q8_0", home, m.url, check=True)
        assert p.stdout.split()[0].endswith("gemma-3-270m-it-Q8_0.gguf"), p.stdout
        p = pull("test-org/gemma-3-270m-it-GGUF", home, m.url, check=True)
        assert p.stdout.split()[0].endswith("gemma-3-270m-it-Q4_K_M.gguf"), p.stdout

    @check("unknown-repo-is-clear")
    def _():
        p = pull("test-org/no-such-model-GGUF:Q4_K_M", home, m.url)
        assert p.returncode != 0
        assert "test-org/no-such-model-GGUF: not found at" in p.stderr, p.stderr[-600:]
        assert "HF_TOKEN" in p.stderr

    @check("unknown-quant-lists-the-others")
    def _():
        p = pull("test-org/gemma-3-270m-it-GGUF:Q2_K", home, m.url)
        assert p.returncode != 0
        assert "no Q2_K file in the repository; available quantizations: Q4_K_M, Q8_0" in p.stderr, \
            p.stderr[-600:]

    @check("split-gguf-comes-whole")
    def _():
        p = pull("test-org/SmolLM2-135M-split-GGUF:Q4_1", home, m.url, check=True)
        first = p.stdout.split()[0]
        assert first.endswith("-00001-of-00003.gguf"), first
        snap = os.path.dirname(first)
        parts = sorted(f for f in os.listdir(snap) if f.endswith(".gguf"))
        assert len(parts) == 3, parts
        src = os.path.join(A.root, "test-org", "SmolLM2-135M-split-GGUF")
        for f in parts:
            assert sha256(os.path.join(snap, f)) == sha256(os.path.join(src, f)), f

    @check("resume-after-a-killed-download")
    def _():
        slow = Mirror("--throttle", "25000000")
        try:
            env = dict(os.environ, HF_HOME=os.path.join(A.work, "hf-resume"),
                       HF_ENDPOINT=slow.url)
            proc = subprocess.Popen([A.bin, "pull", "test-org/SmolLM2-135M-Instruct-GGUF:Q4_1"],
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline:
                if sum(l.startswith("DONE") and "bytes=" in l and "bytes=0-0" not in l
                       for l in slow.lines()) >= 3:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done = [l for l in slow.lines() if l.startswith("DONE") and "bytes=0-0" not in l]
            assert len(done) >= 3, f"the throttled download did not get going: {slow.lines()}"
        finally:
            slow.stop()
        mark = m.mark()
        p = pull("test-org/SmolLM2-135M-Instruct-GGUF:Q4_1",
                 os.path.join(A.work, "hf-resume"), m.url, check=True)
        assert "resuming an interrupted download" in p.stderr, p.stderr[-600:]
        ranges = [l.split()[-1] for l in m.since(mark)
                  if l.startswith("GET") and "/resolve/" in l and "bytes=0-0" not in l]
        assert ranges, m.since(mark)
        start = int(ranges[0].split("=")[1].split("-")[0])
        # hf-hub commits whole 10 MB chunks in order; the kill came after 3 were sent.
        assert start >= 10_000_000, f"the second pull started at byte {start}: {ranges}"
        assert sha256(p.stdout.split()[0]) == sha256(smol)

    @check("checksum-mismatch-refused")
    def _():
        bad = Mirror("--corrupt", "Broken-Q4_1.gguf")
        try:
            hf = os.path.join(A.work, "hf-corrupt")
            p = pull("test-org/Broken-GGUF:Q4_1", hf, bad.url)
            assert p.returncode != 0, p.stdout
            assert "checksum mismatch" in p.stderr, p.stderr[-600:]
            left = [os.path.join(b, f) for b, _, fs in os.walk(hf) for f in fs
                    if f.endswith(".gguf") or len(f) == 64]
            assert not left, f"a corrupt download was kept: {left}"
        finally:
            bad.stop()

    @check("no-network")
    def _():
        closed = f"http://127.0.0.1:{free_port()}"
        p = pull("test-org/SmolLM2-135M-Instruct-GGUF:Q4_1", os.path.join(A.work, "hf-empty"),
                 closed)
        assert p.returncode != 0
        assert "cannot reach" in p.stderr and "HF_HUB_OFFLINE" in p.stderr, p.stderr[-600:]
        # What the cache holds still serves.
        p = pull("test-org/gemma-3-270m-it-GGUF:Q4_K_M", home, closed, check=True)
        assert p.stdout.split()[0].endswith("gemma-3-270m-it-Q4_K_M.gguf")
        p = pull("test-org/gemma-3-270m-it-GGUF:Q4_K_M", home, m.url, {"HF_HUB_OFFLINE": "1"},
                 check=True)
        p = pull("test-org/SmolLM2-135M-Instruct-GGUF:Q4_1", home, m.url,
                 {"HF_HUB_OFFLINE": "1"})
        assert p.returncode != 0 and "HF_HUB_OFFLINE" in p.stderr, p.stderr[-600:]

    @check("full-disk-refused-before-download")
    def _():
        mnt = small_tmpfs("small", "32m")
        try:
            p = pull("test-org/SmolLM2-135M-Instruct-GGUF:Q4_1", home, m.url,
                     {"HF_HUB_CACHE": os.path.join(mnt, "hub")})
            assert p.returncode != 0
            assert "not enough disk space" in p.stderr, p.stderr[-600:]
        finally:
            subprocess.run(["umount", mnt])

    @check("disk-fills-during-download-then-resumes")
    def _():
        mnt = small_tmpfs("filling", "112m")
        slow = Mirror("--throttle", "25000000")
        try:
            cache = {"HF_HUB_CACHE": os.path.join(mnt, "hub")}
            env = dict(os.environ, HF_HOME=home, HF_ENDPOINT=slow.url, NO_COLOR="1", **cache)
            env.pop("RUST_BACKTRACE", None)
            proc = subprocess.Popen([A.bin, "pull", "test-org/SmolLM2-135M-Instruct-GGUF:Q4_1"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            deadline = time.time() + 60
            while time.time() < deadline and not any(
                    l.startswith("DONE") and "bytes=0-9999999" in l for l in slow.lines()):
                time.sleep(0.05)
            # Another program takes the rest of the disk while the pull is running.
            # The pull keeps writing meanwhile, so what statvfs reports may be gone by the
            # time the space is claimed: claim again until less than 2 MB is left.
            fillers = fill_disk(mnt)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode != 0, "the pull succeeded on a full disk"
            assert "the disk is full" in err and "resumes" in err, err[-800:]
            for f in fillers:
                os.remove(f)
            p = pull("test-org/SmolLM2-135M-Instruct-GGUF:Q4_1", home, m.url, cache, check=True)
            assert "resuming an interrupted download" in p.stderr, p.stderr[-600:]
            assert sha256(p.stdout.split()[0]) == sha256(smol)
        finally:
            slow.stop()
            subprocess.run(["umount", mnt])

    @check("models-list-and-rm")
    def _():
        env = dict(os.environ, HF_HOME=home, HF_ENDPOINT=m.url)
        ls = subprocess.run([A.bin, "models", "list"], env=env, capture_output=True, text=True,
                            check=True).stdout
        for want in ("test-org/gemma-3-270m-it-GGUF:Q4_K_M", "test-org/gemma-3-270m-it-GGUF:Q8_0",
                     "test-org/SmolLM2-135M-split-GGUF:Q4_1"):
            assert want in ls, ls
        r = subprocess.run([A.bin, "models", "rm", "test-org/gemma-3-270m-it-GGUF:Q8_0"], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        ls = subprocess.run([A.bin, "models", "list"], env=env, capture_output=True, text=True,
                            check=True).stdout
        assert "gemma-3-270m-it-GGUF:Q8_0" not in ls and "gemma-3-270m-it-GGUF:Q4_K_M" in ls, ls
        r = subprocess.run([A.bin, "models", "rm", "test-org/SmolLM2-135M-split-GGUF"], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(os.path.join(home, "hub", "models--test-org--SmolLM2-135M-split-GGUF"))

    m.stop()
    failed = sum(1 for _, e in RESULTS if e)
    print(f"hub: {len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
