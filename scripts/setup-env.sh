#!/usr/bin/env bash
# Create (or reuse) the edgepack virtualenv and install edgepack with every backend, pinned by constraints.txt
# (CPU build of torch 2.13.0; nothing may pull a CUDA build or downgrade numpy/onnx/TensorFlow).
# Prints the venv's bin folder on the last line. Override the location with EDGEPACK_VENV.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDGEPACK_VENV:-$HOME/.venvs/edgepack}"
py="$(command -v python3.11 || command -v python3)"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
stamp="$venv/.edgepack-installed"
want="$( (echo "$repo"; cat "$repo/pyproject.toml" "$repo/constraints.txt") | sha256sum | cut -c1-16)"
installed_at="$(cd / && "$venv/bin/python" -c "import edgepack, pathlib; print(pathlib.Path(edgepack.__file__).parents[1])" 2>/dev/null || true)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ "$installed_at" != "$repo" ]; then
  echo "installing edgepack[all] into $venv (pinned by constraints.txt)" >&2
  "$venv/bin/python" -m pip install -q -c "$repo/constraints.txt" -e "$repo[all]" >&2
  "$venv/bin/python" -m pip check >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin"
