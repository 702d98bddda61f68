#!/usr/bin/env bash
# Build localgem (once) and start it on the default model, fetching the model if missing.
# Extra arguments go to `localgem serve` (see `localgem serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${LOCALGEM_CACHE:-$HOME/.cache/localgem}/target}"
bash scripts/install-deps.sh
cargo build --release --locked -p localgem
exec "$CARGO_TARGET_DIR/release/localgem" serve "$@"
