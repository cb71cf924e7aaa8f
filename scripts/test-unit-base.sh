#!/usr/bin/env bash
# The unit tests in a virtualenv with ONLY edgepack's base dependencies (no torch, TensorFlow, ONNX Runtime,
# OpenVINO or coremltools): proves the pipeline, bundle, report, budgets, isolation and core need no framework.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDGEPACK_BASE_VENV:-$HOME/.venvs/edgepack-base}"
py="$(command -v python3.11 || command -v python3)"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q -c "$repo/constraints.txt" -e "$repo" pytest import-linter hypothesis "setuptools>=70.1" >&2
for fw in torch tensorflow onnxruntime onnx openvino coremltools; do
  if "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$fw') is None)"; then
    echo "error: $fw is installed in the base venv $venv" >&2; exit 2
  fi
done
cd "$repo"
exec "$venv/bin/python" -m pytest tests/unit "$@"
