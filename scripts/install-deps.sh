#!/usr/bin/env bash
# Installs the Debian packages localgem needs to build (cmake, libclang for bindgen, a C++
# compiler) and to serve (ffmpeg: video parts, and audio codecs such as Opus that the
# built-in decoder does not read) and, with --test, the tools the test suite uses (jq,
# curl). Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# bindgen needs libclang itself (libclang.so from libclang-dev); libclang-cpp, which some
# images carry alone, does not do.
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip python3-venv)
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need+=(ffmpeg)
if [ "${1:-}" = "--test" ]; then
  command -v jq >/dev/null 2>&1 || need+=(jq)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
  # The store suite and the scale test: a throwaway PostgreSQL cluster, and HAProxy.
  [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
