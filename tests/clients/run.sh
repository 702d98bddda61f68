#!/usr/bin/env bash
# Clients written by others against a live localgem, each configured with only a base URL
# and a key: gemini-cli (non-interactive), LangChain's ChatGoogleGenerativeAI, Google's ADK
# and pydantic-ai. They call the classic generateContent API.
#
#   bash tests/clients/run.sh
#
# Environment: LOCALGEM_BIN (server binary), LOCALGEM_MODELS_DIR, CLIENTS_ONLY (regex over
# check names), CLIENTS_KEEP=1 (keep the server's log). The server runs gemma-3-270m (its
# 32k context takes gemini-cli's ~7k-token system prompt and tools) with two 16k KV slots.
# Output: PASS/FAIL lines, then "clients: N passed, M failed".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
BIN="${LOCALGEM_BIN:?set LOCALGEM_BIN to the localgem binary}"
bash "$HERE/setup.sh"
PY="$CACHE/clients/py/bin/python"
GEMINI_CLI="$CACHE/clients/node/node_modules/.bin/gemini"

DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$DATA" --model gemma-3-270m --parallel 2 --kv-slots 2 \
  ${LOCALGEM_MODELS_DIR:+--models-dir "$LOCALGEM_MODELS_DIR"} >"$DATA/server.log" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null
  if [ "${CLIENTS_KEEP:-0}" = 1 ]; then echo "# server log: $DATA/server.log" >&2; else rm -rf "$DATA"; fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
  kill -0 "$PID" 2>/dev/null || { tail -20 "$DATA/server.log"; echo "clients: 0 passed, 1 failed"; exit 1; }
  sleep 1
done

export GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:$PORT" GOOGLE_API_KEY=anything GEMINI_API_KEY=anything
export GOOGLE_GENAI_USE_VERTEXAI=false NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
LOG="$DATA/results.log"
: >"$LOG"
part() { # $1 label; the rest: the command. A crash without a FAIL line counts as one.
  local label="$1"; shift
  local before rc=0
  before="$(grep -c '^FAIL ' "$LOG" || true)"
  (cd "$HERE" && timeout 900 "$@") 2>"$DATA/$label.stderr" | tee -a "$LOG" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$(grep -c '^FAIL ' "$LOG" || true)" = "$before" ]; then
    echo "FAIL clients/$label: exited $rc; $(tail -c 400 "$DATA/$label.stderr" | tr '\n' ' ')" | tee -a "$LOG"
  fi
}
part langchain "$PY" langchain_check.py
part adk "$PY" adk_check.py
part pydantic_ai "$PY" pydantic_ai_check.py
part gemini-cli env GEMINI_CLI="$GEMINI_CLI" bash gemini_cli.sh

passed="$(grep -c '^PASS ' "$LOG" || true)"
failed="$(grep -c '^FAIL ' "$LOG" || true)"
[ "$passed" -gt 0 ] || failed=$((failed + 1))
if [ "$failed" -gt 0 ]; then tail -30 "$DATA/server.log" | sed 's/\x1b\[[0-9;]*m//g' >&2; fi
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
