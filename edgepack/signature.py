"""Tensor signatures: names, shapes and dtypes of a model's inputs and outputs.

A dimension is an ``int`` or ``None`` (dynamic). ``--input name=1x3x224x224[:float32]`` is parsed here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from edgepack.errors import ConfigError

MAX_RANK = 8
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 28  # per sample: 1 GiB of float32
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")
LAYOUTS = ("nchw", "nhwc", "ncw", "nwc", "nc", "tnc", "ntc", "other")

_INPUT_RE = re.compile(r"^(?P<name>[^=,]+)=(?P<shape>[0-9?x]*)(?::(?P<dtype>[a-z0-9]+))?(?P<rest>(,[^,]*)*)$")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, with how it is fed.

    ``batch_axis``: the axis that holds samples (0 for most models, 1 for a recurrent state ``(layers, B, H)``,
    None for an input that is one whole tensor per call, such as a constant). ``value``: a constant fed to every
    call (a sample rate). ``dims``: min/opt/max of dynamic axes (opt is used for calibration). ``state_from``: the
    output whose value is fed back into this input on the next call (recurrent state).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    batch_axis: int | None = 0
    layout: str | None = None
    value: float | None = None
    dims: tuple[tuple[int, int, int, int], ...] = ()  # (axis, min, opt, max)
    state_from: str | None = None

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with dynamic dimensions resolved (batch axis → ``batch``, declared dims → opt, others refused)."""
        opt = {a: o for a, _, o, _ in self.dims}
        loose = [i for i, d in enumerate(self.shape) if d is None and i != self.batch_axis and i not in opt]
        if loose:
            which = f"dimension {loose[0]}" if len(loose) == 1 else f"dimensions {', '.join(map(str, loose))}"
            raise ConfigError(
                f"input '{self.name}' has a dynamic {which} in shape {self.shape_str()}",
                hint=f"give a concrete shape with --input {self.name}=" + "x".join(
                    "1" if x is None else str(x) for x in self.shape
                ) + f", or their ranges with --input '{self.name}={self.shape_str()},"
                + ",".join(f"dims={i}:MIN/OPT/MAX" for i in loose) + "'",
            )
        return tuple(batch if d is None and i == self.batch_axis else opt[i] if d is None else d
                     for i, d in enumerate(self.shape))

    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape of one sample as data files hold it: the model shape without its batch axis."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[:self.batch_axis] + self.shape[self.batch_axis + 1:]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and self.batch_axis is not None and self.shape[self.batch_axis] is None

    @property
    def declared(self) -> bool:
        """Whether anything beyond name/shape/dtype was declared."""
        return (self.batch_axis != 0 or self.layout is not None or self.value is not None or bool(self.dims)
                or self.state_from is not None)

    def shape_str(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["dims"] = [list(x) for x in self.dims]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"),
                   batch_axis=d.get("batch_axis", 0), layout=d.get("layout"), value=d.get("value"),
                   dims=tuple(tuple(x) for x in d.get("dims", ())), state_from=d.get("state_from"))


# an input declared without a shape takes the model's own (its rank is not known yet)
MODEL_SHAPE: tuple = ("model",)


def _bad(text: str, why: str, hint: str) -> ConfigError:
    return ConfigError(f"cannot parse --input '{text}': {why}", hint=hint)


_KEYS_HINT = ("NAME=[SHAPE][:DTYPE][,batch_axis=N|none][,layout=nchw][,value=NUMBER][,dims=AXIS:MIN/OPT/MAX]"
              "[,state=OUTPUT], e.g. --input input=1x3x224x224 or --input 'state=2x?x128,batch_axis=1,state=stateN' "
              "or --input sr=:int64,value=16000")


def parse_input_spec(text: str) -> TensorSpec:
    """Parse an input declaration (see ``_KEYS_HINT``); ``?`` marks a dynamic dimension, an empty shape keeps the
    model's."""
    m = _INPUT_RE.match(text.strip()) if isinstance(text, str) and len(text) <= 1024 else None
    if not m or not m.group("name").strip():
        raise ConfigError(f"cannot parse --input '{text}'", hint=f"use {_KEYS_HINT}")
    name = m.group("name").strip()
    dims: list[int | None] = []
    shape_text = m.group("shape")
    for part in shape_text.split("x") if shape_text else []:
        if part == "?":
            dims.append(None)
        elif part.isdigit() and 0 < int(part) < 2**31:
            dims.append(int(part))
        else:
            raise ConfigError(f"bad dimension '{part}' in --input '{text}'", hint="dimensions are positive integers or ?")
    elements = 1
    for d in dims:
        elements *= d or 1
    if len(dims) > MAX_RANK or any(d is not None and d > MAX_DIM for d in dims) or elements > MAX_ELEMENTS:
        raise ConfigError(f"--input '{text}' is too large (at most {MAX_RANK} dimensions of at most {MAX_DIM}, "
                          f"{MAX_ELEMENTS} elements per sample)", hint="check the shape")
    if len(m.group("name")) > 256 or not m.group("name").isprintable():
        raise ConfigError("--input name is too long or holds control characters", hint="use the model's input name")
    dtype = m.group("dtype") or "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}' in --input '{text}'", hint=f"use one of: {', '.join(DTYPES)}")
    extra: dict = {}
    ranges: list[tuple[int, int, int, int]] = []
    for item in filter(None, (m.group("rest") or "").split(",")):
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not val:
            raise _bad(text, f"'{item}' is not KEY=VALUE", f"use {_KEYS_HINT}")
        if key == "batch_axis":
            if val.lower() == "none":
                extra["batch_axis"] = None
            elif val.isdigit() and int(val) < 16:
                extra["batch_axis"] = int(val)
            else:
                raise _bad(text, f"batch_axis '{val}'", "batch_axis is an axis number (0, 1, …) or none")
        elif key == "layout":
            if val.lower() not in LAYOUTS:
                raise _bad(text, f"layout '{val}'", f"layouts: {', '.join(LAYOUTS)}")
            extra["layout"] = val.lower()
        elif key == "value":
            try:
                number = float(val)
            except ValueError:
                raise _bad(text, f"value '{val}' is not a number", "value is one number fed on every call, "
                           "e.g. value=16000") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise _bad(text, f"value '{val}' is not finite", "value is a finite number")
            extra["value"] = number
            extra.setdefault("batch_axis", None)
        elif key == "dims":
            axis, sep2, rng = val.partition(":")
            parts = rng.split("/")
            if not sep2 or not axis.isdigit() or len(parts) != 3 or not all(x.isdigit() and int(x) > 0 for x in parts):
                raise _bad(text, f"dims '{val}'", "use dims=AXIS:MIN/OPT/MAX, e.g. dims=2:320/640/1280")
            lo, opt, hi = (int(x) for x in parts)
            if not lo <= opt <= hi:
                raise _bad(text, f"dims '{val}' needs MIN ≤ OPT ≤ MAX", "e.g. dims=2:320/640/1280")
            ranges.append((int(axis), lo, opt, hi))
        elif key == "state":
            extra["state_from"] = val
        else:
            raise _bad(text, f"unknown key '{key}'", f"use {_KEYS_HINT}")
    shape = tuple(dims) if shape_text else MODEL_SHAPE
    return TensorSpec(name, shape, dtype, dims=tuple(sorted(ranges)), **extra)


def declare(model_inputs: tuple[TensorSpec, ...], given: tuple[TensorSpec, ...], where: str,
            outputs: tuple[TensorSpec, ...] = ()) -> tuple[TensorSpec, ...]:
    """The model's inputs with the user's declarations applied, each checked against the model; errors name the
    input and the axis."""
    by_name = {t.name: t for t in given}
    unknown = [n for n in by_name if n not in {t.name for t in model_inputs}]
    if unknown:
        raise ConfigError(f"--input names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not "
                          f"an input of {where}", hint=f"inputs are: {', '.join(t.name for t in model_inputs)}")
    out = []
    for t in model_inputs:
        g = by_name.get(t.name)
        if g is None or not g.declared:
            out.append(t)
            continue
        shape = t.shape if g.shape == MODEL_SHAPE else g.shape
        if g.shape != MODEL_SHAPE and len(g.shape) != len(t.shape):
            raise ConfigError(f"--input {g.name}: shape {g.shape_str()} has rank {len(g.shape)}, the model's is "
                              f"{t.shape_str()} (rank {len(t.shape)})")
        spec = TensorSpec(t.name, tuple(shape), t.dtype, batch_axis=g.batch_axis, layout=g.layout, value=g.value,
                          dims=g.dims, state_from=g.state_from)
        rank = len(spec.shape)
        if spec.batch_axis is not None and not 0 <= spec.batch_axis < rank:
            raise ConfigError(f"--input {t.name}: batch_axis {spec.batch_axis} is outside its rank-{rank} shape "
                              f"{spec.shape_str()}", hint=f"use an axis 0…{rank - 1}, or batch_axis=none")
        if spec.batch_axis is not None and spec.shape[spec.batch_axis] not in (None, 1):
            raise ConfigError(f"--input {t.name}: axis {spec.batch_axis} has size {spec.shape[spec.batch_axis]} in "
                              f"{spec.shape_str()}, so it cannot hold samples",
                              hint="name the axis whose size is the batch (dynamic or 1), or batch_axis=none")
        for axis, *_ in spec.dims:
            if not 0 <= axis < rank:
                raise ConfigError(f"--input {t.name}: dims names axis {axis}, outside its rank-{rank} shape")
            if spec.shape[axis] is not None:
                raise ConfigError(f"--input {t.name}: axis {axis} is fixed ({spec.shape[axis]}), dims is for "
                                  "dynamic axes", hint=f"drop dims={axis}:… or mark the axis ? in the shape")
        if spec.layout and spec.layout not in ("other",) and len(spec.layout) != rank:
            raise ConfigError(f"--input {t.name}: layout {spec.layout} has {len(spec.layout)} axes, the input "
                              f"{spec.shape_str()} has {rank}", hint=f"layouts: {', '.join(LAYOUTS)}")
        if spec.layout in ("nchw", "nhwc"):
            c = spec.shape[1] if spec.layout == "nchw" else spec.shape[3]
            other = spec.shape[3] if spec.layout == "nchw" else spec.shape[1]
            if c is not None and other is not None and c > 4 >= other:
                raise ConfigError(f"--input {t.name}: declared {spec.layout}, but the model's shape "
                                  f"{spec.shape_str()} has {c} on the channel axis and {other} where "
                                  f"{'width' if spec.layout == 'nchw' else 'height'} goes",
                                  hint=f"the model looks {'nhwc' if spec.layout == 'nchw' else 'nchw'}: declare "
                                       "that layout (or convert the data)")
        if spec.state_from is not None:
            names = [o.name for o in outputs]
            if outputs and spec.state_from not in names:
                raise ConfigError(f"--input {t.name}: state={spec.state_from} is not an output of {where}",
                                  hint=f"outputs are: {', '.join(names)}")
        out.append(spec)
    return tuple(out)


def load_model_config(path: str) -> tuple[tuple[TensorSpec, ...], dict]:
    """Input declarations and output kinds from a model config TOML::

        [inputs.state]            # every key is optional; the same meaning as on the command line
        shape = "2x?x128"         # empty or absent: the model's own
        dtype = "float32"
        batch_axis = 1            # or "none"
        state = "stateN"
        [inputs.sr]
        dtype = "int64"
        value = 16000
        [outputs]                 # NAME = "SPEC", as --output NAME=SPEC (edgepack.core.outspec)
        output = "probabilities"
        logits = "sequence,batch_axis=1"
        output0 = "regression[0:4]+scores[4:22],axis=1"
        [budgets]                 # the app's budgets over the profiles' (see model_config_budgets)
        size_mb = 100

    Returns the input declarations and ``{output: OutputSpec}``.
    """
    return parse_model_config(_model_config(path), path)


def parse_model_config(doc: dict, path: str) -> tuple[tuple[TensorSpec, ...], dict]:
    """The ``inputs`` and ``outputs`` tables of a model config (as :func:`load_model_config` reads them) parsed;
    ``path`` names where they came from in errors (a file, or a zoo's model entry)."""
    specs = []
    for name, table in (doc.get("inputs") or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: inputs.{name} must be a table", hint="[inputs.NAME] with shape, dtype, …")
        bad = set(table) - {"shape", "dtype", "batch_axis", "layout", "value", "dims", "state"}
        if bad:
            raise ConfigError(f"{path}: inputs.{name} has unknown key(s) {', '.join(sorted(bad))}",
                              hint="keys: shape, dtype, batch_axis, layout, value, dims, state")
        shape = table.get("shape", "")
        if isinstance(shape, list):
            shape = "x".join("?" if d in (None, "?", -1) else str(d) for d in shape)
        text = f"{name}={shape}" + (f":{table['dtype']}" if "dtype" in table else "")
        for key in ("batch_axis", "layout", "value", "state"):
            if key in table:
                text += f",{key}={table[key]}"
        for axis, rng in (table.get("dims") or {}).items():
            text += f",dims={axis}:{'/'.join(str(x) for x in rng)}"
        specs.append(parse_input_spec(text))
    outputs = doc.get("outputs") or {}
    if not isinstance(outputs, dict) or not all(isinstance(v, str) for v in outputs.values()):
        raise ConfigError(f"{path}: [outputs] maps output names to kinds", hint='e.g. boxes = "regression"')
    from edgepack.core import outspec

    parsed = {}
    for name, text in outputs.items():
        try:
            parsed[name] = outspec.parse(text)
        except ValueError as e:
            raise ConfigError(f"{path}: outputs.{name}: {e}", hint='e.g. logits = "sequence,batch_axis=1" or '
                              'output0 = "regression[0:4]+scores[4:22],axis=1"') from None
    return tuple(specs), parsed


def _model_config(path: str) -> dict:
    """A model config file's tables (sections: inputs, outputs, budgets)."""
    import tomllib
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model config not found: {path}", hint="give the path of a .toml file")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({str(e).splitlines()[0]})") from None
    unknown = set(doc) - {"inputs", "outputs", "budgets"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}",
                          hint="sections: inputs, outputs, budgets")
    return doc


def model_config_budgets(path: str) -> dict[str, object]:
    """The ``[budgets]`` table of a model config, keys as ``--budget`` takes them (a ``[budgets.parity]`` table
    becomes ``parity.KEY``)::

        [budgets]
        size_mb = 100
        latency_p50_ms = 12
        parity.min_top1_agreement = 0.97

    Keys are checked against the budget schema here (values when the build applies them)."""
    return budgets_table(_model_config(path).get("budgets") or {}, path)


def budgets_table(table: object, path: str) -> dict[str, object]:
    """A ``[budgets]`` table (a model config's, or a zoo model's) flattened to ``--budget`` keys and checked;
    ``path`` names where it came from in errors."""
    from edgepack.config import budget_key

    if not isinstance(table, dict):
        raise ConfigError(f"{path}: budgets must be a table", hint="[budgets] with size_mb = 100, …")
    flat: dict[str, object] = {}
    for key, value in table.items():
        items = [(f"{key}.{k}", v) for k, v in value.items()] if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            try:
                budget_key(k)
            except ConfigError as e:
                raise ConfigError(f"{path}: [budgets] {e.message}", hint=e.hint) from None
            flat[k] = v
    return flat
