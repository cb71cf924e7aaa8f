#!/usr/bin/env bash
# The main job on the bundled example: train the digits CNN (cached), then build, check and report a bundle for
# every target profile whose backend can build here. Bundles land in dist/make_cnn-cnn/<target>/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(bash "$repo/scripts/setup-env.sh" | tail -n 1)"
cd "$repo"
if [ ! -f dist/example/cnn.pt ]; then
  "$bin/python" examples/digits.py --model cnn --out dist/example
fi
"$bin/edgepack" doctor
"$bin/edgepack" build examples/digits.py:make_cnn --weights dist/example/cnn.pt --input input=1x1x32x32 \
  --target all --skip-unavailable --calibration digits --out dist --archive --junit dist/make_cnn-cnn/junit.xml "$@"
