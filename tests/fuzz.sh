#!/usr/bin/env bash
# Bounded fuzzing with cargo fuzz (libFuzzer) of the request parsers and validators (the
# Interactions API's and generateContent's) and of the
# SSE event encoding and resume logic: FUZZ_SECONDS (default 60) per target, starting from
# the seeds in fuzz/seeds/. Needs a nightly toolchain beside the stable one (rustup); without
# one it says so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here; skipped"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked -q
fi
export CARGO_TARGET_DIR="$CACHE/fuzz-target"
cd fuzz
cargo +nightly fuzz build -O
failed=0
passed=0
for t in request classic sse; do
  corpus="$CACHE/fuzz-corpus/$t"
  mkdir -p "$corpus"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  if cargo +nightly fuzz run -O "$t" "$corpus" "${seeds[@]}" -- -max_total_time="$SECONDS_PER_TARGET" \
      >"$CACHE/fuzz-$t.log" 2>&1; then
    echo "fuzz $t: $(grep -Eo 'Done [0-9]+ runs' "$CACHE/fuzz-$t.log" | tail -1) in ${SECONDS_PER_TARGET}s, no crash"
    passed=$((passed + 1))
  else
    echo "fuzz $t: FAILED"
    tail -40 "$CACHE/fuzz-$t.log"
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
