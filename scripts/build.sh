#!/usr/bin/env bash
# Configures and builds RSIO with the given CMake preset (default: release) into build/PRESET.
# The fio engine is built too when scripts/fio-source.sh has prepared fio's source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
extra=()
fio_src=$(ls -d build/fio-src/fio-*/ 2>/dev/null | head -n 1 || true)
if [ -n "$fio_src" ] && [ -f "$fio_src/config-host.h" ]; then
  extra+=("-DRSIO_FIO_SOURCE_DIR=$(pwd)/${fio_src%/}")
fi
cmake --preset "$preset" "${extra[@]}" >/dev/null
cmake --build "build/$preset"
