#!/usr/bin/env bash
# localgem vs upstream llama-server, side by side in one run (see bench/bench.py).
#
# Builds llama-server and llama-bench from the llama.cpp tree inside the PyPI source package
# llama-cpp-python (scripts/llama-server.sh; cached).
#
#   bash bench/run.sh [bench.py options, e.g. --models smollm2-135m --runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export LOCALGEM_MODELS_DIR="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
BIN="$(bash scripts/llama-server.sh)"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"

cargo build --release --locked -p localgem
for m in smollm2-135m gemma-3-270m; do
  "$CARGO_TARGET_DIR/release/localgem" models pull "$m" >/dev/null
done
python3 bench/bench.py --localgem "$CARGO_TARGET_DIR/release/localgem" \
  --llama-server "$BIN/llama-server" --llama-bench "$BIN/llama-bench" \
  --models-dir "$LOCALGEM_MODELS_DIR" --label "llama-server from llama-cpp-python $VERSION." "$@"
