#!/usr/bin/env bash
# The remote-engine test: two upstream llama-server processes (built by
# scripts/llama-server.sh from the llama.cpp tree of the PyPI source package llama-cpp-python)
# serving SmolLM2-135M, localgem serving that model through them, and localgem serving the same
# GGUF in process for comparison; all started by tests/remote/remote.py.
#
#   bash tests/remote/run.sh
#
# Needs LOCALGEM_BIN and LOCALGEM_MODELS_DIR (scripts/test.sh sets them) and the conformance
# SDKs (tests/conformance/setup.sh) for the seed examples.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
export LOCALGEM_BIN="${LOCALGEM_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/localgem}"
export LOCALGEM_MODELS_DIR="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
export LLAMA_SERVER="${LLAMA_SERVER:-$(bash "$REPO/scripts/llama-server.sh")/llama-server}"
export LOCALGEM_CONFORMANCE_CACHE="${LOCALGEM_CONFORMANCE_CACHE:-$CACHE/conformance}"
[ -x "$LOCALGEM_CONFORMANCE_CACHE/py3/bin/python" ] || bash "$REPO/tests/conformance/setup.sh" >&2
"$LOCALGEM_BIN" models pull smollm2-135m >/dev/null
exec timeout "${REMOTE_TIMEOUT:-1800}" python3 "$HERE/remote.py" "$@"
