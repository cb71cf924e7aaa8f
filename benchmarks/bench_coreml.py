"""Core ML rows: package size per compression option vs fp32, build time, and host parity on the digits holdout.

    python benchmarks/bench_coreml.py                    # trained digits CNN (examples/digits.py:make_cnn)
    python benchmarks/bench_coreml.py --model dwcnn      # depthwise-separable variant
    python benchmarks/bench_coreml.py --untrained        # skip training (sizes and build times only mean much)

Every bundle is converted in one worker process (the first build also pays coremltools' ~10 s import, reported
separately); parity runs through edgepack's numpy Core ML evaluator, so the figures are Linux figures.
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRECISIONS = ("fp32", "fp16", "w8", "palette6", "palette4")


def _build(source, profiles, root: str) -> dict:
    """Worker: time the framework imports, then each conversion."""
    t0 = time.perf_counter()
    import coremltools  # noqa: F401
    import torch  # noqa: F401

    from edgepack.artifact import ConvertData
    from edgepack.backends import registry

    imports = time.perf_counter() - t0
    out = {"imports": imports, "artifacts": {}}
    for p in profiles:
        target = registry.resolve(p)
        t = time.perf_counter()
        art = target.backend.convert(source, p, target.options, ConvertData(), Path(root) / p.name)
        out["artifacts"][p.name] = (art, time.perf_counter() - t)
    return out


def _weights_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in (bundle / "model.mlpackage/Data/com.apple.CoreML/weights").rglob("*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("cnn", "dwcnn", "resnet"), default="cnn")
    ap.add_argument("--out", type=Path, default=REPO / "dist" / "bench-coreml")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--untrained", action="store_true")
    ap.add_argument("--samples", type=int, default=256, help="holdout samples used for parity")
    args = ap.parse_args()

    from edgepack import calibration
    from edgepack.backends.coreml import CoreMLBackend
    from edgepack.config import TargetProfile
    from edgepack.feeds import run_batched, take
    from edgepack.isolation import run_isolated
    from edgepack.parity.compare import compare
    from edgepack.parity.tolerances import limits
    from edgepack.signature import TensorSpec
    from edgepack.sources.torch import load, reference

    args.out.mkdir(parents=True, exist_ok=True)
    weights = None
    if not args.untrained:
        weights = args.out / f"{args.model}.pt"
        if not weights.is_file():
            subprocess.run([sys.executable, str(REPO / "examples" / "digits.py"), "--model", args.model,
                            "--epochs", str(args.epochs), "--out", str(args.out)], check=True)
    inputs = (TensorSpec("input", (1, 1, 32, 32)),)
    source = load(f"{REPO / 'examples' / 'digits.py'}:make_{args.model}", weights=str(weights) if weights else None,
                  inputs=inputs)
    data = calibration.load("digits", source.inputs)
    n = min(args.samples, len(data.holdout["input"]))
    holdout = take(data.holdout, slice(0, n))
    labels = data.holdout_labels[:n] if data.holdout_labels is not None else None
    gold = reference(source, holdout)

    profiles = [TargetProfile(name=f"coreml-{p}", backend="coreml", precision=p) for p in PRECISIONS]
    built = run_isolated(_build, source, profiles, str(args.out), what="coreml bench builds")
    print(f"model: examples/digits.py:make_{args.model} ({'trained' if weights else 'untrained'}), "
          f"{n} digits holdout samples; worker imports (coremltools + torch): {built['imports']:.1f} s")
    header = f"{'precision':10s} {'package KB':>10s} {'weights KB':>10s} {'ratio':>6s} {'build s':>8s} " \
             f"{'max abs':>9s} {'cosine':>9s} {'top-1 agr':>9s} {'acc drop':>8s} {'host ms':>8s}  parity"
    print(header)
    base = None
    for p in profiles:
        art, seconds = built["artifacts"][p.name]
        bundle = args.out / p.name
        w = _weights_bytes(bundle)
        base = base or w
        with CoreMLBackend().runner(art, bundle) as r:
            t = time.perf_counter()
            got = run_batched(r.infer, holdout, r.max_batch)
            ms = (time.perf_counter() - t) * 1000 / n
        res = compare(gold, got, limits("coreml", p.precision), labels=labels)
        m = next(iter(res.metrics.values()))
        print(f"{p.precision:10s} {art.details['package_bytes'] / 1024:10.1f} {w / 1024:10.1f} {w / base:6.3f} "
              f"{seconds:8.2f} {m['max_abs_error']:9.2e} {m['cosine']:9.6f} {m.get('top1_agreement', float('nan')):9.4f}"
              f" {m.get('accuracy_drop', float('nan')):8.4f} {ms:8.2f}  {'pass' if res else 'FAIL'}")


if __name__ == "__main__":
    main()
