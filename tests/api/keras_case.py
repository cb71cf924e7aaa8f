"""The Keras case of tests/api/test_api_builds.py, run in its own process (TensorFlow and PyTorch never share the
test process): build an in-memory keras.Model with a tf.data.Dataset through edgepack.build, then the same model
saved to .keras through the CLI with the same data as .npz. Prints both builds' verdicts as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(out: Path, targets: list[str]) -> None:
    import keras
    import tensorflow as tf

    import edgepack
    from apimodels import digits

    x, y = digits()
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC for Keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 1), name="pixels")
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(10)(h), name="kdigits")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    from typer.testing import CliRunner

    from edgepack.cli import app
    from edgepack.isolation import Workers

    with Workers():  # both builds share one TensorFlow worker start-up
        result = edgepack.build(model, targets, calibration=ds, out=out / "api")
        name = result.reports[0].source["inputs"][0]["name"]
        model.save(out / "kdigits.keras")
        np.savez(out / "data.npz", **{name: x, "labels": y})
        cli = CliRunner().invoke(app, ["build", str(out / "kdigits.keras"), "--calibration", str(out / "data.npz"),
                                       "--out", str(out / "cli"), *(a for t in targets for a in ("-t", t))])
    from edgepack.report import BuildReport

    report = BuildReport.model_validate_json((out / "cli" / "kdigits" / "build-report.json").read_text())
    manifest = json.loads((result.bundles[targets[0]] / "manifest.json").read_text())
    print(json.dumps({
        "api": {r.target: [r.status, [[c.name, c.state] for c in r.checks]] for r in result},
        "cli": {r.target: [r.status, [[c.name, c.state] for c in r.checks]] for r in report.targets},
        "cli_exit": cli.exit_code, "api_exit": result.exit_code, "in_memory": manifest["source"]["in_memory"],
        "opt_ins": manifest["opt_ins"], "samples": result.reports[0].calibration["holdout_samples"],
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
