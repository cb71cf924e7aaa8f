import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

KERAS_TINY = """
import sys, keras
keras.utils.set_random_seed(0)
inp = keras.Input((8, 8, 1), name="image")
x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
x = keras.layers.MaxPooling2D()(x)
x = keras.layers.Flatten()(x)
out = keras.layers.Dense(4, name="scores")(x)
m = keras.Model(inp, out)
w, b = m.get_layer("scores").get_weights()
m.get_layer("scores").set_weights([w * 8.0, b])  # a decisive top-1: parity on near-ties measures noise
m.save(sys.argv[1])
"""


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((n, 4, 4, 1)).astype(np.float32)
    return np.clip(base.repeat(2, 1).repeat(2, 2) + 0.05 * rng.standard_normal((n, 8, 8, 1)), 0, 1).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """The smallest bundles of each runtime the emulated and ssh devices run (emulation is slow):
    ``ort`` (android-ort-int8) and ``openvino`` (intel-openvino-int8) from a tiny ONNX CNN on the digits recipe,
    ``tflite`` (int8) from a tiny Keras CNN on random smooth 8x8 images. Set EDGEPACK_TINY_BUNDLES=DIR to reuse."""
    pytest.importorskip("onnxruntime")
    from edgepack import pipeline
    from edgepack.bundle import read_manifest

    given = os.environ.get("EDGEPACK_TINY_BUNDLES")
    root = Path(given) if given else tmp_path_factory.mktemp("tiny-bundles")
    wanted = {"ort": "android-ort-int8", "openvino": "intel-openvino-int8", "tflite": "t-tflite-int8"}
    found = {k: root / "dist" / m / t for k, (m, t) in
             {"ort": ("tiny", wanted["ort"]), "openvino": ("tiny", wanted["openvino"]),
              "tflite": ("tiny-keras", wanted["tflite"])}.items()}
    if all((p / "manifest.json").is_file() for p in found.values()):
        return found
    from tinymodels import make_tiny_onnx

    onnx_model = make_tiny_onnx(root / "tiny.onnx", width=8)
    res = pipeline.build(str(onnx_model), [wanted["ort"], wanted["openvino"]], calibration="digits",
                         out=root / "dist")
    assert [r.status for r in res] == ["passed", "passed"], [r.checks for r in res]
    keras_model = root / "tiny-keras.keras"
    subprocess.run([sys.executable, "-c", KERAS_TINY, str(keras_model)], check=True, capture_output=True,
                   timeout=600)
    data = root / "images.npz"
    np.savez(data, image=_images(800))  # 400 held out: enough to prove the rate budgets (fewer: INCONCLUSIVE)
    tdir = root / "targets"
    tdir.mkdir(exist_ok=True)
    (tdir / "t-tflite-int8.toml").write_text(
        'backend = "tflite"\nprecision = "int8"\nmin_calibration_samples = 100\n'
        '[options]\nio_type = "int8"\nmin_quantized_share = 1.0\n')
    res = pipeline.build(str(keras_model), [wanted["tflite"]], calibration=str(data), out=root / "dist",
                         targets_dir=tdir)
    assert [r.status for r in res] == ["passed"], [r.checks for r in res]
    for k, p in found.items():
        assert read_manifest(p).target.name == wanted[k], (k, p)
    return found


@pytest.fixture(scope="session")
def arm64_python() -> Path:
    """The arm64-emu device's Python (``edgepack device setup arm64-emu``, cached); skipped where it cannot be
    built here (no qemu-user-static and not root) unless EDGEPACK_REQUIRE_ARM64=1 (CI), where it fails."""
    from edgepack.devices import setup as emu

    try:
        return emu.setup(emu.ARM64)
    except emu.SetupError as e:
        if os.environ.get("EDGEPACK_REQUIRE_ARM64") == "1":
            raise
        pytest.skip(f"arm64-emu unavailable: {e}")


from devicekit import tamper  # noqa: E402,F401 - kept importable from here
