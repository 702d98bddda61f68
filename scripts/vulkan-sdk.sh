#!/usr/bin/env bash
# A Vulkan SDK directory for building localgem with `--features vulkan` on Debian 12, whose
# Vulkan headers (1.3.239) are older than llama.cpp's Vulkan backend needs (it uses
# VK_EXT_layer_settings). Takes Debian 13's libvulkan-dev and spirv-headers packages (headers
# only) with apt from the mirror this machine's Debian sources already use, unpacks them under
# the cache (nothing is installed system-wide), and adds Debian 12's own Vulkan loader and
# glslc. Installs libvulkan-dev, glslc, spirv-headers and mesa-vulkan-drivers (lavapipe, a
# CPU Vulkan driver) with apt when missing. Prints the directory to pass as VULKAN_SDK.
#
#   VULKAN_SDK=$(bash scripts/vulkan-sdk.sh) cargo build --release -p localgem --features vulkan
set -euo pipefail
CACHE="${LOCALGEM_CACHE:-$HOME/.cache/localgem}"
ROOT="$CACHE/vulkan-sdk"
SDK="$ROOT/sdk"
SUITE="${VULKAN_HEADERS_SUITE:-trixie}"
ARCH_LIB="/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"

need=()
for p in libvulkan-dev glslc spirv-headers mesa-vulkan-drivers; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  echo "vulkan-sdk: installing ${need[*]} with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

if [ ! -f "$SDK/include/vulkan/vulkan.hpp" ] || [ ! -f "$ROOT/.$SUITE" ]; then
  rm -rf "$ROOT"
  mkdir -p "$ROOT/apt/lists/partial" "$ROOT/apt/cache/archives/partial" "$ROOT/debs" "$SDK/bin" "$SDK/lib"
  # The Debian mirror of this machine's own sources, asked for the newer suite.
  uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [ -n "$uri" ] || uri="$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$uri" ] || { echo "vulkan-sdk: no Debian source found in /etc/apt" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" "$SUITE" >"$ROOT/apt/$SUITE.sources"
  opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$ROOT/apt"
        -o "Dir::State::Lists=$ROOT/apt/lists" -o "Dir::Cache=$ROOT/apt/cache"
        -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  echo "vulkan-sdk: fetching the Vulkan headers of Debian $SUITE" >&2
  apt-get "${opts[@]}" update -qq >&2
  (cd "$ROOT/debs" && apt-get "${opts[@]}" download libvulkan-dev spirv-headers >&2)
  mkdir -p "$ROOT/unpacked"
  for deb in "$ROOT"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT/unpacked"; done
  cp -r "$ROOT/unpacked/usr/include" "$SDK/include"
  rm -rf "$ROOT/apt" "$ROOT/debs"
  touch "$ROOT/.$SUITE"
fi
# This machine's loader and shader compiler (llama.cpp checks which GLSL extensions glslc has).
ln -sf "$ARCH_LIB/libvulkan.so.1" "$SDK/lib/libvulkan.so"
ln -sf "$(command -v glslc)" "$SDK/bin/glslc"
echo "$SDK"
