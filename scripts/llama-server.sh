#!/usr/bin/env bash
# Build upstream llama.cpp's llama-server, llama-bench and llama-gguf-split (which makes the
# split-GGUF test data of tests/hub) from the llama.cpp tree inside the PyPI source package
# llama-cpp-python (the llama-cpp-sys-2 crate leaves the server out):
# cmake, no UI, no curl/openssl, for this CPU (GGML_NATIVE, as localgem is built). Cached under
# LOCALGEM_CACHE; prints the directory holding the binaries.
#
# Release 0.3.36 is the one whose llama.cpp is nearest the crate's (llama-cpp-sys-2 0.1.161):
# diffing the two trees' src/ and include/ leaves 2.8k lines for 0.3.36, 10k for 0.3.35 and 17k
# for 0.3.34; the crate is the newer of the two. Nothing of it is kept in this repository.
#
#   bin=$(bash scripts/llama-server.sh)
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
WORK="$CACHE/bench/llama-cpp-python-$VERSION"
BIN="$WORK/build/bin"
if [ ! -x "$BIN/llama-server" ] || [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-gguf-split" ]; then
  command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake)" >&2; exit 1; }
  mkdir -p "$WORK"
  [ -f "$WORK/llama_cpp_python-$VERSION.tar.gz" ] ||
    python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" -q >&2
  [ -d "$WORK/llama_cpp_python-$VERSION" ] || tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
  SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
  echo "building llama-server from llama-cpp-python $VERSION (a few minutes, once)" >&2
  cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON >"$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log" >&2; exit 1; }
  cmake --build "$WORK/build" -j"$(nproc)" --target llama-server llama-bench llama-gguf-split >>"$WORK/build.log" 2>&1 ||
    { grep -m 20 -B2 -A5 "error" "$WORK/build.log" >&2; exit 1; }
fi
echo "$BIN"
