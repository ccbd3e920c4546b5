#!/usr/bin/env bash
# Configures and builds RSIO with the given CMake preset (default: release) into build/PRESET.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
cmake --preset "$preset" >/dev/null
cmake --build "build/$preset"
