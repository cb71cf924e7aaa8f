"""The digits example CNN in Keras (NHWC), for the TFLite backend's Keras/SavedModel routes.

Trains on the digits images outside the ``digits-nhwc`` recipe's calibration and holdout splits:

    python examples/digits_keras.py --out dist/example            # writes cnn.keras and cnn_savedmodel/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_cnn(width: int = 32):
    """Same shape as examples/digits.py:make_cnn, channel-last (~0.3 M parameters at width 32)."""
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 1), name="input")
    x = inp
    for i, (c, pool) in enumerate(((width, False), (2 * width, True), (4 * width, True), (4 * width, False))):
        x = layers.Conv2D(c, 3, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if pool:
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.AveragePooling2D(4, name="avg")(x)  # 8x8 → 2x2, like AdaptiveAvgPool2d(2)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(8 * width, activation="relu", name="fc1")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="digits_cnn")


def training_data(recipe: str = "digits-nhwc"):
    import numpy as np

    from edgepack import calibration
    from edgepack.config import load_recipe

    rec = load_recipe(recipe)
    raw, labels, _ = calibration._digits(rec.preprocess)
    x = calibration._normalize(raw, rec.preprocess)
    _, _, rest = calibration.split_indices(len(x), rec)
    return x[rest], np.asarray(labels)[rest]


def train(out: Path, epochs: int = 8, width: int = 32, seed: int = 0) -> dict:
    """Train, then write ``cnn.keras`` and ``cnn_savedmodel/`` into ``out`` (imports TensorFlow)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    x, y = training_data()
    model = make_cnn(width)
    steps = epochs * ((len(x) + 63) // 64)
    lr = keras.optimizers.schedules.CosineDecay(4e-3, steps)
    model.compile(keras.optimizers.AdamW(lr, weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "cnn.keras")
    model.export(str(out / "cnn_savedmodel"), format="tf_saved_model", verbose=False)
    return {"train_s": time.perf_counter() - t0, "train_accuracy": float(hist.history["accuracy"][-1]),
            "params": int(model.count_params())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("dist/example"))
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    info = train(args.out, args.epochs)
    print(f"trained keras cnn ({info['params'] / 1e6:.2f} M params) in {info['train_s']:.1f} s "
          f"(train accuracy {info['train_accuracy']:.3f}) → {args.out}/cnn.keras, {args.out}/cnn_savedmodel")


if __name__ == "__main__":
    main()
