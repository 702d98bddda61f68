#!/usr/bin/env bash
# Property-based API testing with schemathesis (PyPI) against a live localgem, driven by the
# server's own OpenAPI document (/openapi.json): every operation gets generated valid and
# invalid requests, and each response must not be a 5xx and must match the documented status
# codes, content types and schemas. Fails below MIN_CASES cases or on any failure.
#
#   bash tests/schemathesis/run.sh
#
# Environment: LOCALGEM_BIN (server binary), LOCALGEM_MODELS_DIR, SCHEMATHESIS_KEEP=1 (copy the
# report to /tmp/schemathesis.out), SCHEMATHESIS_MAX_EXAMPLES
# (per operation and phase, default 120), SCHEMATHESIS_SEED (default 1, for a reproducible
# run; set another to explore), MIN_CASES (default 2000).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
VENV="$CACHE/schemathesis-venv"
VERSION=4.32.5
MIN_CASES="${MIN_CASES:-2000}"
BIN="${LOCALGEM_BIN:?set LOCALGEM_BIN to the localgem binary}"

if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/schemathesis" --version | grep -q "$VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION"
fi

DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
# Short answers: thousands of requests reach the model.
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$DATA" --default-max-output-tokens 8 \
  ${LOCALGEM_MODELS_DIR:+--models-dir "$LOCALGEM_MODELS_DIR"} >"$DATA/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; [ -n "${SCHEMATHESIS_KEEP:-}" ] && cp "$DATA/schemathesis.out" /tmp/schemathesis.out; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do
  curl -fs -o /dev/null "$URL/healthz" && break
  kill -0 $PID 2>/dev/null || { tail -20 "$DATA/server.log"; echo "schemathesis: 0 passed, 1 failed"; exit 1; }
  sleep 1
done

OUT="$DATA/schemathesis.out"
set +e
"$VENV/bin/schemathesis" run "$URL/openapi.json" --url "$URL" -H "x-goog-api-key: schemathesis" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-120}" --seed "${SCHEMATHESIS_SEED:-1}" --workers 2 \
  --no-color >"$OUT" 2>&1
rc=$?
set -e
grep -E "generated|Seed|❌|FAILED|failures" "$OUT" || true
if grep -q "panicked" "$DATA/server.log"; then
  grep -m3 "panicked" "$DATA/server.log"
  rc=1
fi
line="$(grep -Eo '[0-9]+ generated, [0-9]+ passed(, [0-9]+ failed)?' "$OUT" | tail -1)"
gen="$(echo "$line" | grep -Eo '^[0-9]+' || echo 0)"
passed="$(echo "$line" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)"
failed=$(( gen - passed ))
if [ "$rc" -ne 0 ]; then
  tail -60 "$OUT"
  [ "$failed" -gt 0 ] || failed=1
fi
if [ "$gen" -lt "$MIN_CASES" ]; then
  echo "only $gen cases ran; at least $MIN_CASES are required"
  failed=$(( failed + 1 ))
fi
echo "schemathesis: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
