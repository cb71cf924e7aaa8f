#!/usr/bin/env bash
# Install everything (pinned), check the architecture contracts and the JSON Schemas, then run the test suite
# plus the device harness against this host, the emulated ARM64 device and a loopback ssh board (their Debian
# packages and the cached arm64-emu prefix come from scripts/setup-devices.sh).
# Extra arguments go to pytest (e.g. -m 'not slow', -k tflite).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(bash "$repo/scripts/setup-env.sh" | tail -n 1)"
cd "$repo"
"$bin/lint-imports"
"$bin/edgepack" schema --check --out docs/schema
bash "$repo/scripts/setup-devices.sh" "$bin"
export EDGEPACK_REQUIRE_ARM64=1
# the multi-seed sweeps of real builds (marker `sweep`, tens of minutes) are left out unless asked for (-m sweep)
exec "$bin/python" -m pytest tests device_tests -m "not sweep" "$@"
