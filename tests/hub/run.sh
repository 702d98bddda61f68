#!/usr/bin/env bash
# `localgem pull` and `serve --model OWNER/NAME:QUANT` against a local stand-in for the
# Hugging Face Hub (tests/hub/mirror.py, the hub's URL layout and headers) that serves the
# bundled GGUF files; the real hub is never contacted. Repositories in the mirror:
#   test-org/gemma-3-270m-it-GGUF         the bundled Gemma 3 270M as Q4_K_M, the test vision
#                                         projector, and a Q8_0 stand-in (random bytes, never
#                                         loaded) so that there is a choice to make
#   test-org/SmolLM2-135M-Instruct-GGUF   the bundled SmolLM2 (resume test)
#   test-org/SmolLM2-135M-split-GGUF      SmolLM2 split in 3 by upstream llama-gguf-split
#   test-org/Broken-GGUF                  served with a flipped byte (checksum test)
# check.py covers quantization choice, projector, split, resume after kill -9, checksum,
# unknown repo/quant, no network, full disk, models list/rm; then a server pulls a model on
# first use into an empty cache and the seed's basic example runs against it (Python SDKs,
# JS SDK, curl), with an image through the projector it fetched.
#
#   bash tests/hub/run.sh          # needs the release binary (scripts/test.sh builds it)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
MODELS="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
BIN="${LOCALGEM_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/localgem}"
[ -x "$BIN" ] || { echo "run.sh: $BIN missing (cargo build --release)" >&2; exit 2; }
export LOCALGEM_MODELS_DIR="$MODELS"

for id in smollm2-135m gemma-3-270m; do "$BIN" models pull "$id" >/dev/null; done
PROJ="$(bash "$REPO/tests/vision/make.sh")"
SPLIT="$(bash "$REPO/scripts/llama-server.sh")/llama-gguf-split"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/localgem-hub.XXXXXX")"
SERVER_PID=""
MIRROR_PID=""
cleanup() {
  local rc=$?
  for pid in $SERVER_PID $MIRROR_PID; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  mountpoint -q "$WORK/small" 2>/dev/null && umount "$WORK/small"
  [ "${HUB_KEEP:-0}" = 1 ] || rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

ROOT="$WORK/root"
g="$ROOT/test-org/gemma-3-270m-it-GGUF"
s="$ROOT/test-org/SmolLM2-135M-Instruct-GGUF"
sp="$ROOT/test-org/SmolLM2-135M-split-GGUF"
b="$ROOT/test-org/Broken-GGUF"
mkdir -p "$g" "$s" "$sp" "$b"
ln -s "$MODELS/gemma-3-270m-q4_k_m.gguf" "$g/gemma-3-270m-it-Q4_K_M.gguf"
ln -s "$PROJ" "$g/mmproj-gemma-3-270m-it-F16.gguf"
head -c 3000000 /dev/urandom >"$g/gemma-3-270m-it-Q8_0.gguf"
printf '# Gemma 3 270M (test mirror)\n' >"$g/README.md"
ln -s "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$s/SmolLM2-135M-Instruct-Q4_1.gguf"
ln -s "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$b/Broken-Q4_1.gguf"
"$SPLIT" --split --split-max-tensors 100 "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" \
  "$sp/SmolLM2-135M-Instruct-Q4_1" >"$WORK/split.log" 2>&1 ||
  { tail -20 "$WORK/split.log" >&2; exit 1; }
n="$(find "$sp" -name '*-of-00003.gguf' | wc -l)"
[ "$n" = 3 ] || { echo "run.sh: llama-gguf-split made $(ls "$sp") (want 3 parts)" >&2; exit 1; }

rc=0
python3 "$HERE/check.py" --bin "$BIN" --root "$ROOT" --work "$WORK" --models "$MODELS" |
  tee "$WORK/results.log" || rc=$?

# A server that pulls on first use, into an empty cache.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MPORT="$(free_port)"
python3 "$HERE/mirror.py" --root "$ROOT" --port "$MPORT" --log "$WORK/serve-mirror.log" &
MIRROR_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$MPORT/" && break; sleep 0.1; done
PORT="$(free_port)"
RUST_BACKTRACE=0 HF_HOME="$WORK/serve-hf" HF_ENDPOINT="http://127.0.0.1:$MPORT" NO_COLOR=1 \
  "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  --model test-org/gemma-3-270m-it-GGUF:Q4_K_M --parallel 2 --kv-slots 2 \
  --default-max-output-tokens 256 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 1
done
serve_fail() { echo "FAIL hub/serve-$1: $2" | tee -a "$WORK/results.log"; tail -20 "$WORK/server.log" | sed 's/\x1b\[[0-9;]*m//g' >&2; rc=1; }
if ! curl -fsS -o /dev/null "$URL/healthz"; then
  serve_fail pulls-on-first-use "the server did not come up"
else
  if grep -q "/resolve/main/gemma-3-270m-it-Q4_K_M.gguf" "$WORK/serve-mirror.log" &&
     [ -n "$(find "$WORK/serve-hf/hub" -name 'gemma-3-270m-it-Q4_K_M.gguf')" ] &&
     curl -fsS "$URL/v1beta/models" | grep -q '"models/gemma-3-270m-it"' &&
     grep -q "images: yes" "$WORK/server.log"; then
    echo "PASS hub/serve-pulls-on-first-use" | tee -a "$WORK/results.log"
  else
    serve_fail pulls-on-first-use "no pull in the mirror log, no file in the cache, or the model is not listed"
  fi
  # The seed's basic example, unchanged (Python SDK 3.x and 2.x, JS SDK, curl).
  if LOCALGEM_URL="$URL" CONFORMANCE_ONLY='^ex_01_basic/' CONFORMANCE_NO_EXTRA=1 \
     CONFORMANCE_NO_CLASSIC=1 bash "$REPO/tests/conformance/run.sh" >"$WORK/seed.log" 2>&1 &&
     grep -q "conformance: [1-9][0-9]* passed, 0 failed" "$WORK/seed.log"; then
    echo "PASS hub/serve-seed-basic-example ($(grep -o 'conformance: .*' "$WORK/seed.log"))" | tee -a "$WORK/results.log"
  else
    grep -E '^(PASS|FAIL)' "$WORK/seed.log" >&2 || tail -20 "$WORK/seed.log" >&2
    serve_fail seed-basic-example "the seed's basic example did not pass"
  fi
  # An image through the projector the pull fetched beside the model.
  img="$(base64 -w0 "$REPO/tests/fixtures/organ.jpg")"
  printf '{"model":"gemini-2.5-flash","store":false,"generation_config":{"max_output_tokens":8},"input":[{"type":"text","text":"Describe it."},{"type":"image","data":"%s","mime_type":"image/jpeg"}]}' "$img" >"$WORK/image.json"
  code="$(curl -sS -o "$WORK/image.out" -w '%{http_code}' "$URL/v1beta/interactions" \
    -H 'x-goog-api-key: k' -H 'Content-Type: application/json' --data-binary @"$WORK/image.json")"
  if [ "$code" = 200 ] && grep -q '"image"' "$WORK/image.out"; then
    echo "PASS hub/serve-image-through-pulled-projector" | tee -a "$WORK/results.log"
  else
    serve_fail image-through-pulled-projector "HTTP $code: $(head -c 300 "$WORK/image.out")"
  fi
fi

p="$(grep -c '^PASS' "$WORK/results.log" || true)"
f="$(grep -c '^FAIL' "$WORK/results.log" || true)"
echo "hub (with serve): $p passed, $f failed"
[ "$f" = 0 ] && [ "$rc" = 0 ]
