#!/usr/bin/env bash
# Install everything (pinned) and run the test suite plus the device harness against this host.
# Extra arguments go to pytest (e.g. -m 'not slow' for a quick loop, -k tflite).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(bash "$repo/scripts/setup-env.sh" | tail -n 1)"
cd "$repo"
exec "$bin/python" -m pytest tests device_tests "$@"
