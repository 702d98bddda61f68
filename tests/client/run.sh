#!/usr/bin/env bash
# Rust client examples against a live localgem.
#
# Builds crates/client/examples (release), starts a localgem server on a free port with a
# temporary data dir, and runs every example with only GOOGLE_GEMINI_BASE_URL and
# GEMINI_API_KEY set, as the official SDKs' users would. An example passes when it exits 0
# and prints an answer. Then crates/client/tests/live.rs runs against the same server.
#
#   bash tests/client/run.sh
#
# Environment (all optional):
#   LOCALGEM_URL             use this running server instead of starting one
#   LOCALGEM_BIN             server binary (default: $CARGO_TARGET_DIR/release/localgem if
#                            CARGO_TARGET_DIR is set, else <repo>/target/release/localgem)
#   LOCALGEM_MODELS_DIR      models dir, read by the server
#   LOCALGEM_HEALTH_TIMEOUT  seconds to wait for GET /healthz (default 300)
#   CLIENT_EXAMPLE_TIMEOUT   per-example timeout in seconds (default 300)
#   CLIENT_SKIP_BUILD=1      do not build the examples (they must be in $CARGO_TARGET_DIR)
#   CLIENT_ONLY              regex: run only the examples whose name matches
#   The image_upload example needs a server whose default model takes images; it runs when
#   one of these is set, and is skipped otherwise:
#   LOCALGEM_VISION_URL      a running vision server
#   LOCALGEM_VISION_ARGS     extra `serve` arguments (word-split) for a second server, started
#                            after the first one has stopped (e.g. "--model gemma-3-270m
#                            --mmproj gemma-3-270m=mmproj.gguf")
#   LOCALGEM_VISION_MODEL    shorthand for LOCALGEM_VISION_ARGS="--model M --default-model <M's id>"
#   CLIENT_IMAGE             the image to upload (default: tests/fixtures/organ.jpg if present,
#                            else a generated PNG)
#
# Output: "PASS name: <first line of the answer>" / "FAIL name: reason" / "SKIP name: reason",
# then "client examples: N passed, M failed[, K skipped]". Exit status 1 if any failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
HEALTH_TIMEOUT="${LOCALGEM_HEALTH_TIMEOUT:-300}"
EX_TIMEOUT="${CLIENT_EXAMPLE_TIMEOUT:-300}"
PYTHON="${PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
EXAMPLES="$TARGET_DIR/release/examples"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/localgem-client.XXXXXX")"
SERVER_PID=""
DATA_DIR=""
BASE_URL=""
PASSED=0
FAILED=0
SKIPPED=0

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  if [ -n "$DATA_DIR" ]; then rm -rf "$DATA_DIR"; fi
  DATA_DIR=""
}

cleanup() {
  local rc=$?
  stop_server
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "FAIL $1"; FAILED=$((FAILED + 1)); }
summary() {
  local s="client examples: $PASSED passed, $FAILED failed"
  [ "$SKIPPED" -gt 0 ] && s="$s, $SKIPPED skipped"
  echo "$s"
}

# ---- build ------------------------------------------------------------------------
if [ "${CLIENT_SKIP_BUILD:-0}" != 1 ]; then
  echo "# building the examples (cargo build --release --locked -p localgem-client --examples)" >&2
  (cd "$REPO" && cargo build --release --locked -p localgem-client --examples)
  (cd "$REPO" && cargo test --release --locked -p localgem-client --test live --no-run)
fi

# ---- server -----------------------------------------------------------------------
if [ -n "${LOCALGEM_BIN:-}" ]; then
  BIN="$LOCALGEM_BIN"
else
  BIN="$TARGET_DIR/release/localgem"
fi
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac

# start_server LABEL [extra serve args...]: sets BASE_URL; returns 1 if it never got healthy.
start_server() {
  local label="$1"; shift
  if [ ! -x "$BIN" ]; then
    echo "run.sh: server binary $BIN not found (cargo build --release, or set LOCALGEM_BIN / LOCALGEM_URL)" >&2
    return 1
  fi
  local port
  port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/localgem-client-data.XXXXXX")"
  BASE_URL="http://127.0.0.1:$port"
  echo "# starting $BIN serve --addr 127.0.0.1:$port --data-dir $DATA_DIR $*" >&2
  "$BIN" serve --addr "127.0.0.1:$port" --data-dir "$DATA_DIR" "$@" >"$WORK/server-$label.log" 2>&1 &
  SERVER_PID=$!
  wait_healthy "$label"
}

wait_healthy() {
  local label="$1" deadline=$((SECONDS + HEALTH_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 5 "$BASE_URL/healthz" 2>/dev/null; do
    if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "run.sh: server exited before becoming healthy; last log lines:" >&2
      tail -n 30 "$WORK/server-$label.log" >&2 || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run.sh: $BASE_URL/healthz not ready after ${HEALTH_TIMEOUT}s" >&2
      [ -f "$WORK/server-$label.log" ] && tail -n 30 "$WORK/server-$label.log" >&2
      return 1
    fi
    sleep 1
  done
  echo "# server ready at $BASE_URL" >&2
}

# run_example NAME [ARGS...]: runs it against $BASE_URL and checks its output.
run_example() {
  local name="$1"; shift
  if [ -n "${CLIENT_ONLY:-}" ] && ! [[ "$name" =~ $CLIENT_ONLY ]]; then return 0; fi
  local exe="$EXAMPLES/$name" out="$WORK/$name.out" err="$WORK/$name.err" rc=0
  if [ ! -x "$exe" ]; then fail "$name: $exe not built"; return 0; fi
  # The image example runs against a projector with random weights (tests/vision): its image
  # embeddings mean nothing to the model, which then answers with whitespace alone about
  # once in a hundred sampled answers. A blank answer there gets one more run.
  local tries=1 try
  [ "$name" = image_upload ] && tries=2
  for ((try = 1; try <= tries; try++)); do
    rc=0
    env -u GOOGLE_API_KEY -u GOOGLE_GENAI_API_VERSION -u GOOGLE_GENAI_USE_VERTEXAI \
      -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u http_proxy -u https_proxy -u all_proxy \
      NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost" \
      GOOGLE_GEMINI_BASE_URL="$BASE_URL" GEMINI_API_KEY="client-test-key" \
      timeout "$EX_TIMEOUT" "$exe" "$@" >"$out" 2>"$err" || rc=$?
    if [ "$rc" -ne 0 ]; then
      fail "$name: exited $rc; stderr: $(tail -c 400 "$err" | tr '\n' ' ')"
      return 0
    fi
    if grep -q '[^[:space:]]' "$out"; then break; fi
    if [ "$try" -lt "$tries" ]; then
      echo "# $name: blank answer (random test projector); running it once more"
    else
      fail "$name: printed nothing$([ "$tries" -gt 1 ] && echo ' (twice)')"
      return 0
    fi
  done
  if [ "$name" = stateless ]; then
    for n in 1 2; do
      if ! grep -Eq "^Response $n: *[^[:space:]]" "$out"; then
        fail "$name: no answer after \"Response $n:\""
        return 0
      fi
    done
  fi
  local first
  first="$(grep -m1 '[^[:space:]]' "$out" | cut -c1-120)"
  echo "PASS $name: $first"
  PASSED=$((PASSED + 1))
}

if [ -n "${LOCALGEM_URL:-}" ]; then
  BASE_URL="${LOCALGEM_URL%/}"
  wait_healthy external || { fail "run.sh: $BASE_URL/healthz not 200"; summary; exit 1; }
elif ! start_server text; then
  fail "run.sh: server did not become healthy"
  summary
  exit 1
fi

for name in basic thinking_level system_instruction temperature streaming multi_turn \
            multi_turn_streaming stateless; do
  run_example "$name"
done

# ---- the client's own checks against the live server (crates/client/tests/live.rs) ------
if [ -z "${CLIENT_ONLY:-}" ] || [[ live =~ $CLIENT_ONLY ]]; then
  if (cd "$REPO" && LOCALGEM_CLIENT_LIVE_URL="$BASE_URL" NO_PROXY="127.0.0.1,localhost" \
        timeout "$EX_TIMEOUT" cargo test --release --locked -q -p localgem-client --test live) \
        >"$WORK/live.out" 2>&1; then
    echo "PASS live: files (2-chunk upload, get, list, delete), get/cancel/delete, error envelopes, stateless history from a stream"
    PASSED=$((PASSED + 1))
  else
    fail "live: $(grep -E 'panicked|assert|Error' "$WORK/live.out" | head -c 600 | tr '\n' ' ')"
  fi
fi

# ---- image (needs a vision model) -----------------------------------------------------
if [ -n "${CLIENT_ONLY:-}" ] && ! [[ image_upload =~ $CLIENT_ONLY ]]; then
  :
elif [ -z "${LOCALGEM_VISION_URL:-}${LOCALGEM_VISION_ARGS:-}${LOCALGEM_VISION_MODEL:-}" ]; then
  echo "SKIP image_upload: no vision server (set LOCALGEM_VISION_ARGS, LOCALGEM_VISION_MODEL or LOCALGEM_VISION_URL)"
  SKIPPED=$((SKIPPED + 1))
else
  IMAGE="${CLIENT_IMAGE:-}"
  if [ -z "$IMAGE" ] && [ -f "$REPO/tests/fixtures/organ.jpg" ]; then
    IMAGE="$REPO/tests/fixtures/organ.jpg"
  fi
  if [ -z "$IMAGE" ]; then
    IMAGE="$WORK/instrument.png"
    # A 96x64 PNG: a dark keyboard-like band under light vertical pipes.
    "$PYTHON" - "$IMAGE" <<'PY'
import struct, sys, zlib
w, h = 96, 64
rows = []
for y in range(h):
    row = bytearray([0])
    for x in range(w):
        if y > 44:
            px = (20, 20, 20) if (x // 6) % 2 else (235, 235, 225)
        elif x % 8 < 5:
            px = (200, 170, 90)
        else:
            px = (90, 60, 40)
        row += bytes(px)
    rows.append(bytes(row))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
  fi
  if [ -n "${LOCALGEM_VISION_URL:-}" ]; then
    stop_server
    BASE_URL="${LOCALGEM_VISION_URL%/}"
    run_example image_upload "$IMAGE"
  else
    stop_server
    if [ -n "${LOCALGEM_VISION_ARGS:-}" ]; then
      # shellcheck disable=SC2206
      VISION_ARGS=($LOCALGEM_VISION_ARGS)
    else
      VISION_ARGS=(--model "$LOCALGEM_VISION_MODEL" --default-model "${LOCALGEM_VISION_MODEL%%=*}")
    fi
    if [ -n "${LOCALGEM_URL:-}" ]; then
      fail "image_upload: LOCALGEM_URL is set; give the vision server as LOCALGEM_VISION_URL"
    elif start_server vision "${VISION_ARGS[@]}"; then
      run_example image_upload "$IMAGE"
    else
      fail "image_upload: the vision server did not become healthy"
    fi
  fi
fi

summary
[ "$FAILED" -eq 0 ]
