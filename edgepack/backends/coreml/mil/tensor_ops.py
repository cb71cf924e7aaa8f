"""Tensor ops: elementwise math, comparisons, casts, reductions, and shape/indexing ops."""

from __future__ import annotations

import numpy as np

from edgepack.backends.coreml.mil.nn_ops import erf
from edgepack.backends.coreml.mil.program import NUMPY_DTYPES
from edgepack.backends.coreml.mil.registry import axis_list, op, scalar

# ------------------------------------------------------------------------------------------ elementwise

_UNARY = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "round": np.round, "sign": np.sign, "exp": np.exp,
    "exp2": np.exp2, "log": np.log, "sqrt": np.sqrt, "square": np.square, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "atanh": np.arctanh, "erf": erf, "logical_not": np.logical_not,
}
_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
    "pow": np.power, "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal, "logical_and": np.logical_and,
    "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}


def _register_unary(name, fn):
    @op(name)
    def impl(ctx, x, epsilon=None):
        return fn(x)

    return impl


def _register_binary(name, fn):
    @op(name)
    def impl(ctx, x, y):
        return fn(x, y)

    return impl


for _n, _f in _UNARY.items():
    _register_unary(_n, _f)
for _n, _f in _BINARY.items():
    _register_binary(_n, _f)


@op("real_div")
def real_div(ctx, x, y):
    if ctx.out_dtype.startswith(("int", "uint")):
        return np.trunc(np.true_divide(x, y)).astype(np.int64)
    return np.true_divide(x, y)


@op("floor_div")
def floor_div(ctx, x, y):
    return np.floor_divide(x, y)


@op("mod")
def mod(ctx, x, y):
    return np.mod(x, y)


@op("rsqrt")
def rsqrt(ctx, x, epsilon=1e-12):
    return 1.0 / np.sqrt(x + float(scalar(epsilon)))


@op("inverse")
def inverse(ctx, x, epsilon=1e-4):
    return 1.0 / (x + float(scalar(epsilon)))


@op("log")
def log(ctx, x, epsilon=0.0):
    return np.log(x + float(scalar(epsilon, 0.0)))


@op("clip")
def clip(ctx, x, alpha, beta):
    return np.minimum(np.maximum(x, alpha), beta)


@op("threshold")
def threshold(ctx, x, alpha):
    return np.maximum(x, alpha)


@op("select")
def select(ctx, cond, a, b):
    return np.where(np.asarray(cond).astype(bool), a, b)


@op("cast")
def cast(ctx, x, dtype):
    target = str(dtype)
    if target not in NUMPY_DTYPES:
        raise ValueError(f"cast to unknown dtype '{target}'")
    if target == "bool":
        return x != 0
    return np.asarray(x).astype(NUMPY_DTYPES[target])


@op("identity")
def identity(ctx, x):
    return x


# ------------------------------------------------------------------------------------------ reductions


def _reduce(name, fn):
    @op(name)
    def impl(ctx, x, axes=None, keep_dims=False):
        ax = tuple(range(x.ndim)) if axes is None else axis_list(axes, x.ndim)
        return fn(x.astype(np.float64) if x.dtype.kind == "f" else x, ax, bool(scalar(keep_dims, False)))

    return impl


_REDUCTIONS = {
    "reduce_mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "reduce_sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)),
    "reduce_sum_square": lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k),
    "reduce_log_sum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "reduce_log_sum_exp": lambda x, a, k: np.log(np.sum(np.exp(x - np.max(x, axis=a, keepdims=True)), axis=a,
                                                        keepdims=k)) + np.max(x, axis=a, keepdims=k),
}
for _n, _f in _REDUCTIONS.items():
    _reduce(_n, _f)


@op("reduce_argmax", "reduce_argmin")
def reduce_arg(ctx, x, axis=-1, keep_dims=False):
    ax = int(scalar(axis))
    fn = np.argmax if ctx.op.type == "reduce_argmax" else np.argmin
    out = fn(x, axis=ax)
    return np.expand_dims(out, ax) if bool(scalar(keep_dims, False)) else out


@op("cumsum")
def cumsum(ctx, x, axis=0, exclusive=False, reverse=False):
    ax = int(scalar(axis))
    y = np.flip(x, ax) if bool(scalar(reverse, False)) else x
    c = np.cumsum(y, axis=ax)
    if bool(scalar(exclusive, False)):
        c = c - y
    return np.flip(c, ax) if bool(scalar(reverse, False)) else c


@op("topk")
def topk(ctx, x, k=1, axis=-1, ascending=False, sort=True, return_indices=True):
    ax, k = int(scalar(axis)), int(scalar(k))
    order = np.argsort(x if bool(scalar(ascending, False)) else -x, axis=ax, kind="stable")
    idx = np.take(order, np.arange(k), axis=ax)
    return np.take_along_axis(x, idx, axis=ax), idx.astype(np.int32)


@op("argsort")
def argsort(ctx, x, axis=-1, ascending=False):
    ax = int(scalar(axis))
    return np.argsort(x if bool(scalar(ascending, False)) else -x, axis=ax, kind="stable").astype(np.int32)


# ------------------------------------------------------------------------------------------ shapes


@op("reshape")
def reshape(ctx, x, shape):
    want = [int(v) for v in np.asarray(shape).ravel()]
    if 0 in want:
        if ctx.ios >= 17:  # iOS17+: a 0 copies the dim at the same position counted from the right (1 if none)
            out = []
            for i, v in enumerate(want):
                j = x.ndim - (len(want) - i)
                out.append((x.shape[j] if j >= 0 else 1) if v == 0 else v)
            want = out
        else:  # iOS15/16: a 0 copies the dim at the same position; only legal when the ranks agree
            if len(want) != x.ndim:
                raise ValueError(f"reshape with 0 needs len(shape) == rank(x) before iOS17 (got {want}, {x.shape})")
            want = [x.shape[i] if v == 0 else v for i, v in enumerate(want)]
    return np.reshape(x, want)


@op("flatten2d")
def flatten2d(ctx, x, axis=1):
    ax = int(scalar(axis)) % (x.ndim + 1) if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), -1)


@op("transpose")
def transpose(ctx, x, perm):
    return np.transpose(x, [int(p) for p in np.asarray(perm).ravel()])


@op("expand_dims")
def expand_dims(ctx, x, axes):
    out_rank = x.ndim + np.asarray(axes).size
    for a in sorted(int(v) % out_rank for v in np.asarray(axes).ravel()):
        x = np.expand_dims(x, a)
    return x


@op("squeeze")
def squeeze(ctx, x, axes=None):
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=axis_list(axes, x.ndim))


@op("concat", variadic=("values",))
def concat(ctx, values, axis, interleave=False):
    ax = int(scalar(axis))
    if bool(scalar(interleave, False)):
        stacked = np.stack(values, axis=ax + 1 if ax >= 0 else ax)
        shape = list(values[0].shape)
        shape[ax] = -1
        return stacked.reshape(shape)
    return np.concatenate(values, axis=ax)


@op("stack", variadic=("values",))
def stack(ctx, values, axis=0):
    return np.stack(values, axis=int(scalar(axis)))


@op("split")
def split(ctx, x, axis, num_splits=None, split_sizes=None):
    ax = int(scalar(axis))
    if split_sizes is not None:
        bounds = np.cumsum(np.asarray(split_sizes).ravel())[:-1]
        return tuple(np.split(x, bounds, axis=ax))
    return tuple(np.split(x, int(scalar(num_splits)), axis=ax))


@op("tile")
def tile(ctx, x, reps):
    return np.tile(x, [int(r) for r in np.asarray(reps).ravel()])


@op("reverse")
def reverse(ctx, x, axes=None):
    return np.flip(x, axis=None if axes is None else axis_list(axes, x.ndim))


@op("pad")
def pad(ctx, x, pad, mode="constant", constant_val=0.0):
    p = [int(v) for v in np.asarray(pad).ravel()]
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = str(mode)
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(scalar(constant_val, 0.0)))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@op("slice_by_index")
def slice_by_index(ctx, x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    n = x.ndim
    b = np.asarray(begin).ravel().tolist()
    e = np.asarray(end).ravel().tolist()
    s = np.asarray(stride).ravel().tolist() if stride is not None else [1] * n
    bm = np.asarray(begin_mask).ravel().tolist() if begin_mask is not None else [False] * n
    em = np.asarray(end_mask).ravel().tolist() if end_mask is not None else [False] * n
    sm = np.asarray(squeeze_mask).ravel().tolist() if squeeze_mask is not None else [False] * n
    index: list[object] = []
    for i in range(n):
        if sm[i]:
            index.append(int(b[i]))
            continue
        index.append(slice(None if bm[i] else int(b[i]), None if em[i] else int(e[i]), int(s[i])))
    return x[tuple(index)]


@op("slice_by_size")
def slice_by_size(ctx, x, begin, size):
    index = []
    for d, (b, sz) in enumerate(zip(np.asarray(begin).ravel().tolist(), np.asarray(size).ravel().tolist())):
        b = int(b) % x.shape[d] if x.shape[d] else 0
        index.append(slice(b, None if int(sz) == -1 else b + int(sz)))
    return x[tuple(index)]


@op("gather")
def gather(ctx, x, indices, axis=0, batch_dims=0, validate_indices=False):
    ax, bd = int(scalar(axis)) % x.ndim, int(scalar(batch_dims, 0))
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[ax], idx)
    if bd == 0:
        return np.take(x, idx, axis=ax)
    batch = x.shape[:bd]
    out = [np.take(x[b], idx[b], axis=ax - bd) for b in np.ndindex(*batch)]
    return np.stack(out).reshape(batch + out[0].shape)


@op("gather_along_axis")
def gather_along_axis(ctx, x, indices, axis=0, validate_indices=False):
    ax = int(scalar(axis)) % x.ndim
    idx = np.asarray(indices).astype(np.int64)
    return np.take_along_axis(x, np.where(idx < 0, idx + x.shape[ax], idx), axis=ax)


@op("gather_nd")
def gather_nd(ctx, x, indices, batch_dims=0, validate_indices=False):
    idx = np.asarray(indices).astype(np.int64)
    k = idx.shape[-1]
    return x[tuple(np.moveaxis(idx, -1, 0))] if k else x


@op("shape")
def shape(ctx, x):
    return np.array(x.shape, np.int32)


@op("fill")
def fill(ctx, shape, value=0.0):
    return np.full([int(v) for v in np.asarray(shape).ravel()], value)


@op("range_1d")
def range_1d(ctx, start, end, step):
    return np.arange(scalar(start), scalar(end), scalar(step))


@op("one_hot")
def one_hot(ctx, indices, one_hot_vector_size, axis=-1, on_value=1.0, off_value=0.0):
    n = int(scalar(one_hot_vector_size))
    hot = np.asarray(indices)[..., None] == np.arange(n)
    y = np.where(hot, on_value, off_value)
    return np.moveaxis(y, -1, int(scalar(axis)))


@op("band_part")
def band_part(ctx, x, lower=-1, upper=-1):
    lo, up = int(scalar(lower)), int(scalar(upper))
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = ((lo < 0) | (i - j <= lo)) & ((up < 0) | (j - i <= up))
    return np.where(keep, x, 0)


@op("classify")
def classify(ctx, probabilities, classes):
    """Classifier head: returns (predicted label, probabilities); dictionaries are kept as the score array."""
    p = np.asarray(probabilities)
    labels = [c.item() if isinstance(c, np.ndarray) else c for c in (classes or [])]
    best = int(np.argmax(p.reshape(-1)[: len(labels)])) if labels else 0
    return np.asarray(labels[best] if labels else ""), p
