#!/usr/bin/env python3
"""Regenerate edgepack/backends/tensorrt/data/onnx-trt-<version>.json from onnx-tensorrt's docs/operators.md.

usage: scripts/vendor-trt-op-tables.py GIT_DIR BRANCH [BRANCH ...]
  GIT_DIR  a clone (or bare mirror) of https://github.com/onnx/onnx-tensorrt
  BRANCH   e.g. 8.5-GA 8.6-GA 10.1-GA (the branch's docs/operators.md is read with `git show`)

Each JSON names its source (repository, branch, commit, file) and keeps every row of the table: the op, whether it
is supported, its types and its restrictions, verbatim. Nothing is edited by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "edgepack" / "backends" / "tensorrt" / "data"


def parse(text: str) -> dict:
    head = re.search(r"TensorRT (\d+\.\d+) supports operators (?:up to Opset (\d+)|in the inclusive range of opset "
                     r"(\d+) to opset (\d+))", text)
    if not head:
        raise SystemExit("no 'TensorRT X.Y supports operators ...' sentence found")
    types = re.search(r"TensorRT supports the following ONNX data types: ([^\n]+)", text)
    ops: dict[str, dict] = {}
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|--") or line.startswith("| Operator "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells or not cells[0]:
            continue
        ops[cells[0]] = {
            "supported": cells[1].startswith("Y") if len(cells) > 1 else False,
            "experimental": "EXPERIMENTAL" in cells[1] if len(cells) > 1 else False,
            "types": [t.strip() for t in cells[2].split(",") if t.strip()] if len(cells) > 2 else [],
            "restrictions": cells[3] if len(cells) > 3 else "",
        }
    return {
        "doc_version": head.group(1),
        "opset_min": int(head.group(3)) if head.group(3) else 1,
        "opset_max": int(head.group(2) or head.group(4)),
        "data_types": [t.strip(" .") for t in re.split(r",| and ", types.group(1)) if t.strip(" .")] if types else [],
        "ops": ops,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    git_dir, branches = argv[0], argv[1:]
    OUT.mkdir(parents=True, exist_ok=True)
    for branch in branches:
        commit = subprocess.run(["git", "-C", git_dir, "rev-parse", branch], check=True, capture_output=True,
                                text=True).stdout.strip()
        text = subprocess.run(["git", "-C", git_dir, "show", f"{commit}:docs/operators.md"], check=True,
                              capture_output=True, text=True).stdout
        table = parse(text)
        data = {"source": {"repo": "onnx/onnx-tensorrt", "branch": branch, "commit": commit,
                           "file": "docs/operators.md", "license": "Apache-2.0"}, **table}
        name = branch.removeprefix("release/").split("-")[0]
        path = OUT / f"onnx-trt-{name}.json"
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"{path.name}: TensorRT {table['doc_version']} opset {table['opset_min']}..{table['opset_max']}, "
              f"{sum(o['supported'] for o in table['ops'].values())}/{len(table['ops'])} ops supported")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
