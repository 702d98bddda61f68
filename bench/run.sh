#!/usr/bin/env bash
# localgem vs upstream llama-server, side by side in one run (see bench/bench.py).
#
# Builds llama-server and llama-bench from the llama.cpp tree inside the PyPI source package
# llama-cpp-python (the llama-cpp-sys-2 crate leaves the server out), with cmake, no UI, no
# curl/openssl, for this CPU (GGML_NATIVE, as localgem is built). Release 0.3.36 is the one
# whose llama.cpp is nearest the crate's (llama-cpp-sys-2 0.1.161): diffing the two trees'
# src/ and include/ leaves 2.8k lines for 0.3.36, 10k for 0.3.35 and 17k for 0.3.34; the crate
# is the newer of the two. Nothing of it is kept in this repository.
#
#   bash bench/run.sh [bench.py options, e.g. --models smollm2-135m --runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export LOCALGEM_MODELS_DIR="${LOCALGEM_MODELS_DIR:-$CACHE/models}"
WORK="$CACHE/bench/llama-cpp-python-$VERSION"
BIN="$WORK/build/bin"

if [ ! -x "$BIN/llama-server" ] || [ ! -x "$BIN/llama-bench" ]; then
  mkdir -p "$WORK"
  python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" -q
  tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
  SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
  cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON >/dev/null
  cmake --build "$WORK/build" -j"$(nproc)" --target llama-server llama-bench >/dev/null
fi

cargo build --release --locked -p localgem
for m in smollm2-135m gemma-3-270m; do
  "$CARGO_TARGET_DIR/release/localgem" models pull "$m" >/dev/null
done
python3 bench/bench.py --localgem "$CARGO_TARGET_DIR/release/localgem" \
  --llama-server "$BIN/llama-server" --llama-bench "$BIN/llama-bench" \
  --models-dir "$LOCALGEM_MODELS_DIR" --label "llama-server from llama-cpp-python $VERSION." "$@"
