#!/usr/bin/env bash
# The Vulkan build, on a machine without a GPU: builds localgem with `--features vulkan`
# against Debian's Vulkan packages (scripts/vulkan-sdk.sh: Debian 13's headers, this machine's
# loader and glslc), starts it on Mesa's CPU Vulkan driver (lavapipe) with every layer
# offloaded, checks that the model really runs on the Vulkan device, and runs the seed's basic
# example against it (Python SDKs, JS SDK, curl). Not part of scripts/test.sh: it compiles
# llama.cpp a second time, with its Vulkan shaders (about 20 minutes cold on 2 cores).
#
#   bash tests/vulkan/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
export LOCALGEM_MODELS_DIR="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
TARGET="${LOCALGEM_VULKAN_TARGET_DIR:-$CACHE/target-vulkan}"

bash "$REPO/scripts/install-deps.sh" >&2
SDK="$(bash "$REPO/scripts/vulkan-sdk.sh")"
echo "== build with --features vulkan (VULKAN_SDK=$SDK, target $TARGET)"
(cd "$REPO" && VULKAN_SDK="$SDK" CARGO_TARGET_DIR="$TARGET" \
  cargo build --release --locked -p localgem --features vulkan)
BIN="$TARGET/release/localgem"
"$BIN" models pull smollm2-135m >/dev/null

# lavapipe is a CPU-type Vulkan device, which llama.cpp uses only when named.
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/localgem-vulkan.XXXXXX")"
PID=""
cleanup() { local rc=$?; [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; exit "$rc"; }
trap cleanup EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
NO_COLOR=1 "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$WORK/data" --model smollm2-135m \
  --parallel 2 --kv-slots 2 --default-max-output-tokens 48 >"$WORK/server.log" 2>&1 &
PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 1
done
fail=0
log() { sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log"; }
if ! curl -fsS -o /dev/null "$URL/healthz"; then
  echo "FAIL vulkan/serve: the server did not come up"; log | tail -30; exit 1
fi
device="$(log | grep -o 'device Vulkan0 .*' | head -1 || true)"
if [ -n "$device" ] && echo "$device" | grep -q "layers offloaded"; then
  echo "PASS vulkan/device: $device"
else
  echo "FAIL vulkan/device: the model is not on a Vulkan device:"; log | grep -E "device|vulkan|Vulkan" | head; fail=1
fi
# lavapipe decodes a few tokens a second: answers are capped at 48 tokens (the examples set no
# cap of their own) and each example gets 5 minutes.
if CONFORMANCE_TIMEOUT=300 LOCALGEM_URL="$URL" CONFORMANCE_ONLY='^ex_01_basic/' CONFORMANCE_NO_EXTRA=1 CONFORMANCE_NO_CLASSIC=1 \
   bash "$REPO/tests/conformance/run.sh" >"$WORK/seed.log" 2>&1 &&
   grep -q "conformance: [1-9][0-9]* passed, 0 failed" "$WORK/seed.log"; then
  echo "PASS vulkan/seed-basic-example ($(grep -o 'conformance: .*' "$WORK/seed.log"))"
else
  grep -E '^(PASS|FAIL)' "$WORK/seed.log" || tail -20 "$WORK/seed.log"
  echo "FAIL vulkan/seed-basic-example"; fail=1
fi
# The same greedy answer as the CPU build gives is not expected (different kernels round
# differently); a real answer is.
answer="$(curl -fsS "$URL/v1beta/interactions" -H 'x-goog-api-key: k' -H 'Content-Type: application/json' \
  -d '{"model":"gemini-2.5-flash","input":"What is the capital of France?","store":false,"generation_config":{"temperature":0,"max_output_tokens":24}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["steps"][-1]["content"][0]["text"])')"
echo "# greedy answer on Vulkan: $answer"
log | grep -E "decode|tok/s" | tail -2 || true
if echo "$answer" | grep -qi paris; then echo "PASS vulkan/greedy-answer"; else echo "FAIL vulkan/greedy-answer"; fail=1; fi
exit "$fail"
