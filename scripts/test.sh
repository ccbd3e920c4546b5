#!/usr/bin/env bash
# Builds (release preset) and runs the test suite. Extra arguments go to ctest, e.g.
#   scripts/test.sh -L unit        only the fast unit tests
#   scripts/test.sh -LE bench      everything but benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${RSIO_PRESET:-release}
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/setup-deps.sh
fi
scripts/build.sh "$preset"
ctest --test-dir "build/$preset" --output-on-failure -j2 "$@"
