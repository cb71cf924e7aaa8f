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
  # the onnx → torch bridge (docs/bridge.md): onnx2torch without its torchvision dependency (PyPI's torchvision for
  # torch 2.13 is a CUDA build that fails to import beside torch+cpu; the bridge worker guards onnx2torch's import
  # of it). pip check then reports exactly that one missing requirement, which is filtered out; anything else fails.
  "$venv/bin/python" -m pip install -q --no-deps -c "$repo/constraints.txt" onnx2torch >&2
  check="$("$venv/bin/python" -m pip check 2>&1 || true)"
  rest="$(printf '%s\n' "$check" | grep -v -e '^No broken requirements found' \
          -e '^onnx2torch 1\.5\.15 requires torchvision, which is not installed\.$' | grep -v '^$' || true)"
  if [ -n "$rest" ]; then printf '%s\n' "$rest" >&2; exit 1; fi
  echo "$want" > "$stamp"
fi
echo "$venv/bin"
