#!/usr/bin/env bash
# localgem SDK conformance suite.
#
# Runs the Python / JavaScript / REST examples of the user's seed documents
# (shared/seeds/*.txt) UNCHANGED against a live localgem, with only
# GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY set, plus extra SDK checks
# (sdk_extra.py with google-genai 3.x, sdk_extra.mjs with @google/genai), and the classic
# API's checks (classic.py, classic.mjs, classic.sh: generateContent and friends).
#
#   bash tests/conformance/run.sh
#
# Environment (all optional):
#   LOCALGEM_URL            use this running server instead of starting one
#   LOCALGEM_BIN            server binary (default: $CARGO_TARGET_DIR/release/localgem
#                           if CARGO_TARGET_DIR is set, else <repo>/target/release/localgem)
#   LOCALGEM_HEALTH_TIMEOUT seconds to wait for GET /healthz (default 300)
#   LOCALGEM_SEED_DIR       seed documents (default <repo>/../shared/seeds)
#   LOCALGEM_CACHE          cache root; SDKs live in $LOCALGEM_CACHE/conformance
#                           (default ~/.cache/localgem/conformance)
#   CONFORMANCE_TIMEOUT     per-example timeout in seconds (default 120)
#   CONFORMANCE_EXTRA_TIMEOUT whole-script timeout for each sdk_extra file (default 1200)
#   CONFORMANCE_ONLY        regex: run only the checks whose name matches
#   CONFORMANCE_NO_EXTRA=1  skip sdk_extra.py / sdk_extra.mjs
#   CONFORMANCE_NO_CLASSIC=1 skip classic.py / classic.mjs / classic.sh (generateContent)
#   CONFORMANCE_SKIP_SETUP=1 do not run setup.sh (SDKs must already be installed)
#   CONFORMANCE_KEEP=1      keep the work dir (example files, outputs, server.log)
#   LOCALGEM_VISION_ARGS    extra `serve` arguments for a second server whose default model
#                           takes images (e.g. "--model gemma-3-270m --mmproj
#                           gemma-3-270m=mmproj.gguf"); the seed's image example runs against
#                           it, and against the text-only server expecting a 400. Unset: the
#                           image example is skipped.
#   LOCALGEM_VISION_URL     use this running vision server instead
#
# Output: one line per check, "PASS name" / "FAIL name: reason" /
# "SKIP name: reason" (plus "# ..." notes), then exactly one line
# "conformance: N passed, M failed[, K skipped]".  Exit status 1 if any failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LOCALGEM_CONFORMANCE_CACHE:-${LOCALGEM_CACHE:-$HOME/.cache/localgem}/conformance}"
export LOCALGEM_CONFORMANCE_CACHE="$CACHE"
HEALTH_TIMEOUT="${LOCALGEM_HEALTH_TIMEOUT:-300}"
EX_TIMEOUT="${CONFORMANCE_TIMEOUT:-120}"
EXTRA_TIMEOUT="${CONFORMANCE_EXTRA_TIMEOUT:-1200}"
PYTHON="${PYTHON:-python3}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/localgem-conformance.XXXXXX")"
SERVER_PID=""
DATA_DIR=""
VISION_PID=""
VISION_DATA=""

stop_server() {
  local pid="$1"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

cleanup() {
  local rc=$?
  stop_server "$SERVER_PID"
  stop_server "$VISION_PID"
  [ -n "$DATA_DIR" ] && rm -rf "$DATA_DIR"
  [ -n "$VISION_DATA" ] && rm -rf "$VISION_DATA"
  [ "${CONFORMANCE_KEEP:-0}" = 1 ] || rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait until $1/healthz answers 200, or fail the run. $2: the server's pid (empty when it is
# not ours), $3: its log, $4: what to call it.
wait_healthy() {
  local url="$1" pid="$2" log="$3" name="$4" why=""
  local deadline=$((SECONDS + HEALTH_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 5 "$url/healthz" 2>/dev/null; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      why="exited before GET /healthz answered 200"
    elif [ "$SECONDS" -ge "$deadline" ]; then
      why="did not answer GET /healthz with 200 within ${HEALTH_TIMEOUT}s"
    fi
    if [ -n "$why" ]; then
      echo "run.sh: the $name $why; last log lines:" >&2
      if [ -f "$log" ]; then tail -n 30 "$log" >&2; fi
      echo "FAIL run.sh: the $name $why"
      echo "conformance: 0 passed, 1 failed"
      exit 1
    fi
    sleep 1
  done
  echo "# $name ready at $url" >&2
}

# ---- SDKs ---------------------------------------------------------------------
if [ "${CONFORMANCE_SKIP_SETUP:-0}" != 1 ]; then
  bash "$HERE/setup.sh"
fi
PY3="$CACHE/py3/bin/python"
PY2="$CACHE/py2/bin/python"
for f in "$PY3" "$PY2" "$CACHE/node/node_modules/@google/genai/package.json"; do
  [ -e "$f" ] || { echo "run.sh: $f missing; run tests/conformance/setup.sh" >&2; exit 2; }
done

# ---- examples -------------------------------------------------------------------
"$PYTHON" "$HERE/extract.py" --out "$WORK" ${LOCALGEM_SEED_DIR:+--seed-dir "$LOCALGEM_SEED_DIR"} >/dev/null
# ESM ignores NODE_PATH: put node_modules next to the .mjs files instead.
ln -s "$CACHE/node/node_modules" "$WORK/node_modules"
cp "$HERE/sdk_extra.mjs" "$WORK/sdk_extra.mjs"
cp "$HERE/classic.mjs" "$WORK/classic.mjs"
# The image example uploads "path/to/organ.jpg" (relative to where it runs); its audio and
# video versions an organ chord (three pipes' tones) and a clip of the photo with the chord,
# made here with ffmpeg.
mkdir -p "$WORK/path/to"
cp "$REPO/tests/fixtures/organ.jpg" "$WORK/path/to/organ.jpg"
ffmpeg -v error -nostdin -y -f lavfi -i "aevalsrc=0.3*sin(2*PI*220*t)+0.2*sin(2*PI*277*t)+0.2*sin(2*PI*330*t):s=44100:d=3" \
  "$WORK/path/to/organ.mp3"
ffmpeg -v error -nostdin -y -loop 1 -framerate 5 -i "$WORK/path/to/organ.jpg" -i "$WORK/path/to/organ.mp3" \
  -t 3 -vf "scale=320:-2" -c:v mpeg4 -c:a aac -shortest "$WORK/path/to/organ.mp4"

# ---- server ---------------------------------------------------------------------
if [ -n "${LOCALGEM_URL:-}" ]; then
  BASE_URL="${LOCALGEM_URL%/}"
else
  if [ -n "${LOCALGEM_BIN:-}" ]; then
    BIN="$LOCALGEM_BIN"
  elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    BIN="$CARGO_TARGET_DIR/release/localgem"
  else
    BIN="$REPO/target/release/localgem"
  fi
  case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
  if [ ! -x "$BIN" ]; then
    echo "run.sh: server binary $BIN not found (cargo build --release, or set LOCALGEM_BIN / LOCALGEM_URL)" >&2
    echo "FAIL run.sh: server binary $BIN not found"
    echo "conformance: 0 passed, 1 failed"
    exit 1
  fi
  PORT="$(free_port)"
  DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/localgem-conformance-data.XXXXXX")"
  BASE_URL="http://127.0.0.1:$PORT"
  echo "# starting $BIN serve --addr 127.0.0.1:$PORT --data-dir $DATA_DIR" >&2
  "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
fi

wait_healthy "$BASE_URL" "$SERVER_PID" "$WORK/server.log" server

VISION_URL="${LOCALGEM_VISION_URL:-}"
if [ -z "$VISION_URL" ] && [ -n "${LOCALGEM_VISION_ARGS:-}" ] && [ -n "${BIN:-}" ]; then
  VPORT="$(free_port)"
  VISION_DATA="$(mktemp -d "${TMPDIR:-/tmp}/localgem-conformance-vision.XXXXXX")"
  echo "# starting the vision server: serve --addr 127.0.0.1:$VPORT $LOCALGEM_VISION_ARGS" >&2
  # shellcheck disable=SC2086
  "$BIN" serve --addr "127.0.0.1:$VPORT" --data-dir "$VISION_DATA" $LOCALGEM_VISION_ARGS >"$WORK/vision-server.log" 2>&1 &
  VISION_PID=$!
  VISION_URL="http://127.0.0.1:$VPORT"
  wait_healthy "$VISION_URL" "$VISION_PID" "$WORK/vision-server.log" "vision server"
fi

export GOOGLE_GEMINI_BASE_URL="$BASE_URL"
export GEMINI_API_KEY="conformance-test-key"
unset GOOGLE_API_KEY GOOGLE_GENAI_API_VERSION GOOGLE_GENAI_USE_VERTEXAI || true
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

# ---- run --------------------------------------------------------------------------
LOG="$WORK/results.log"
: >"$LOG"

# $1 = label for crash reporting; rest = command. Its PASS/FAIL/SKIP lines go to
# the log; a crash without any FAIL line is counted as one FAIL.
run_part() {
  local label="$1"; shift
  local before after rc=0
  before="$(grep -c '^FAIL ' "$LOG" || true)"
  "$@" 2>"$WORK/$label.stderr" | tee -a "$LOG" || rc=$?
  after="$(grep -c '^FAIL ' "$LOG" || true)"
  if [ "$rc" -ne 0 ] && [ "$after" = "$before" ]; then
    echo "FAIL $label: exited $rc without reporting a failure; stderr: $(tail -c 400 "$WORK/$label.stderr" | tr '\n' ' ')" | tee -a "$LOG"
  fi
}

run_part seed-examples "$PYTHON" "$HERE/runner.py" --work "$WORK" --py3 "$PY3" --py2 "$PY2" --timeout "$EX_TIMEOUT" \
  --vision-url "$VISION_URL"

if [ "${CONFORMANCE_NO_EXTRA:-0}" != 1 ]; then
  run_part sdk_extra.py timeout "$EXTRA_TIMEOUT" "$PY3" "$HERE/sdk_extra.py"
  run_part sdk_extra.mjs bash -c 'cd "$1" && exec timeout "$2" node sdk_extra.mjs' _ "$WORK" "$EXTRA_TIMEOUT"
fi

if [ "${CONFORMANCE_NO_CLASSIC:-0}" != 1 ]; then
  # The classic API (generateContent & co.): Python and JavaScript SDKs, and the REST
  # quickstart with curl; images go to the vision server when there is one.
  export CONFORMANCE_VISION_URL="$VISION_URL" CONFORMANCE_IMAGE="$WORK/path/to/organ.jpg"
  run_part classic.py timeout "$EXTRA_TIMEOUT" "$PY3" "$HERE/classic.py"
  run_part classic.mjs bash -c 'cd "$1" && exec timeout "$2" node classic.mjs' _ "$WORK" "$EXTRA_TIMEOUT"
  run_part classic.sh timeout "$EXTRA_TIMEOUT" bash "$HERE/classic.sh"
fi

if grep -q '^FAIL ' "$LOG"; then
  # What the servers were doing, for the failures above.
  for f in server.log vision-server.log; do
    [ -f "$WORK/$f" ] || continue
    echo "# last lines of $f:" >&2
    tail -n 40 "$WORK/$f" | sed 's/\x1b\[[0-9;]*m//g' >&2
  done
fi

passed="$(grep -c '^PASS ' "$LOG" || true)"
failed="$(grep -c '^FAIL ' "$LOG" || true)"
skipped="$(grep -c '^SKIP ' "$LOG" || true)"
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "FAIL run.sh: no check ran"
  failed=1
fi
[ "${CONFORMANCE_KEEP:-0}" = 1 ] && echo "# work dir kept: $WORK (server.log, *.out, *.stderr)" >&2
summary="conformance: $passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
