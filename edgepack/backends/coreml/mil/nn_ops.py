"""Network ops: convolution, pooling, linear/matmul, normalization, activations, attention.

Semantics follow the MIL op definitions (``coremltools.converters.mil.mil.ops.defs``); spatial layouts are NC[D]HW.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgepack.backends.coreml.mil.registry import axis_list, op, scalar

_ERF = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    try:  # scipy is a dependency of scikit-learn, which edgepack needs; fall back to math.erf if absent
        from scipy.special import erf as _erf

        return _erf(x)
    except ImportError:  # pragma: no cover
        return _ERF(x)


# ------------------------------------------------------------------------------------------ padding


def _pads(pad_type: str, pad: np.ndarray | None, spatial: tuple[int, ...], kernel: tuple[int, ...],
          strides: tuple[int, ...], dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis for the MIL pad types valid/custom/same/same_lower."""
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = [int(v) for v in np.asarray(pad if pad is not None else [0] * 2 * n).ravel()]
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            eff = (k - 1) * d + 1
            total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise ValueError(f"unknown pad_type '{pad_type}'")


def _windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]) -> np.ndarray:
    """(N, C, *out_spatial, *kernel) windows of an already padded x."""
    n = len(kernel)
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    axes = tuple(range(2, 2 + n))
    w = sliding_window_view(x, eff, axis=axes)
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dilations)
    return w[sl]


def _tuple(v: object, n: int, default: int = 1) -> tuple[int, ...]:
    if v is None:
        return (default,) * n
    return tuple(int(a) for a in np.asarray(v).ravel())


# ------------------------------------------------------------------------------------------ conv


@op("conv")
def conv(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    n = x.ndim - 2
    strides, dilations = _tuple(strides, n), _tuple(dilations, n)
    kernel = tuple(weight.shape[2:])
    pads = _pads(str(pad_type), pad, x.shape[2:], kernel, strides, dilations)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    win = _windows(xp, kernel, strides, dilations)  # N, C, *O, *K
    g = int(scalar(groups, 1))
    N, C = x.shape[:2]
    cout = weight.shape[0]
    out_sp = win.shape[2:2 + n]
    win = win.reshape((N, g, C // g) + out_sp + kernel)
    w = weight.reshape((g, cout // g, C // g) + kernel)
    letters = "hwd"[:n]
    klet = "ijk"[:n]
    expr = f"ngc{letters}{klet},goc{klet}->ngo{letters}"
    y = np.einsum(expr, win, w, optimize=True).reshape((N, cout) + out_sp)
    if bias is not None:
        y = y + bias.reshape((1, cout) + (1,) * n)
    return y


@op("conv_transpose")
def conv_transpose(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1,
                   output_shape=None):
    # weight: (C_in, C_out/groups, *K); computed as a strided scatter of per-position outer products
    n = x.ndim - 2
    strides, dilations = _tuple(strides, n), _tuple(dilations, n)
    kernel = tuple(weight.shape[2:])
    g = int(scalar(groups, 1))
    N, C = x.shape[:2]
    cog = weight.shape[1]
    full = tuple((s_in - 1) * s + (k - 1) * d + 1 for s_in, s, k, d in zip(x.shape[2:], strides, kernel, dilations))
    y = np.zeros((N, g * cog) + full, np.float64)
    xg = x.reshape((N, g, C // g) + x.shape[2:])
    wg = weight.reshape((g, C // g, cog) + kernel)
    for kidx in np.ndindex(*kernel):
        contrib = np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None), slice(None), slice(None)) + kidx])
        contrib = contrib.reshape((N, g * cog) + x.shape[2:])
        sl = tuple(slice(k * d, k * d + (s_in - 1) * s + 1, s)
                   for k, d, s_in, s in zip(kidx, dilations, x.shape[2:], strides))
        y[(slice(None), slice(None)) + sl] += contrib
    if str(pad_type) == "custom" and pad is not None:
        p = [int(v) for v in np.asarray(pad).ravel()]
        y = y[(slice(None), slice(None)) + tuple(slice(p[2 * i], y.shape[2 + i] - p[2 * i + 1]) for i in range(n))]
    elif output_shape is not None:
        want = tuple(int(v) for v in np.asarray(output_shape).ravel())[2:]
        y = y[(slice(None), slice(None)) + tuple(slice(0, w) for w in want)]
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * n)
    return y


# ------------------------------------------------------------------------------------------ pooling


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, kind, exclude_padding=False):
    n = x.ndim - 2
    kernel = _tuple(kernel_sizes, n)
    strides = _tuple(strides, n)
    pads = _pads(str(pad_type), pad, x.shape[2:], kernel, strides, (1,) * n)
    if bool(scalar(ceil_mode, False)) and str(pad_type) == "custom":
        extra = []
        for size, k, s, (b, e) in zip(x.shape[2:], kernel, strides, pads):
            span = size + b + e - k
            out = -(-span // s) + 1
            if (out - 1) * s >= size + b:  # the last window must start inside the input or left padding
                out -= 1
            extra.append(max((out - 1) * s + k - (size + b + e), 0))
    else:
        extra = [0] * n
    full = [(b, e + ex) for (b, e), ex in zip(pads, extra)]
    if kind == "max":
        xp = np.pad(x, [(0, 0), (0, 0)] + full, constant_values=-np.inf)
        return _windows(xp, kernel, strides, (1,) * n).max(axis=tuple(range(-n, 0)))
    sq = x * x if kind == "l2" else x
    xp = np.pad(sq.astype(np.float64), [(0, 0), (0, 0)] + full)
    total = _windows(xp, kernel, strides, (1,) * n).sum(axis=tuple(range(-n, 0)))
    if kind == "l2":
        return np.sqrt(total)
    # divisor: real input cells, or input + explicit padding (never the ceil-mode overhang)
    ones = np.ones((1, 1) + x.shape[2:])
    if exclude_padding:
        cnt = np.pad(ones, [(0, 0), (0, 0)] + full)
    else:
        cnt = np.pad(np.pad(ones, [(0, 0), (0, 0)] + pads, constant_values=1.0),
                     [(0, 0), (0, 0)] + [(0, ex) for ex in extra])
    div = _windows(cnt, kernel, strides, (1,) * n).sum(axis=tuple(range(-n, 0)))
    return total / np.maximum(div, 1)


@op("max_pool")
def max_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "max")


@op("avg_pool")
def avg_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
             exclude_padding_from_average=False):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "avg", bool(scalar(exclude_padding_from_average)))


@op("l2_pool")
def l2_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "l2")


# ------------------------------------------------------------------------------------------ linear


@op("linear")
def linear(ctx, x, weight, bias=None):
    y = np.matmul(x, weight.T)
    return y if bias is None else y + bias


@op("matmul")
def matmul(ctx, x, y, transpose_x=False, transpose_y=False):
    if bool(scalar(transpose_x, False)):
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if bool(scalar(transpose_y, False)):
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return np.matmul(x, y)


@op("einsum", variadic=("values",))
def einsum(ctx, values, equation):
    return np.einsum(str(equation), *values)



# ------------------------------------------------------------------------------------------ normalization


@op("batch_norm")
def batch_norm(ctx, x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + float(scalar(epsilon)))
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@op("instance_norm")
def instance_norm(ctx, x, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(range(2, x.ndim))
    xd = x.astype(np.float64)
    y = (xd - xd.mean(axes, keepdims=True)) / np.sqrt(xd.var(axes, keepdims=True) + float(scalar(epsilon)))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@op("layer_norm")
def layer_norm(ctx, x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    ax = axis_list(axes, x.ndim) if axes is not None else tuple(range(x.ndim))
    xd = x.astype(np.float64)
    y = (xd - xd.mean(ax, keepdims=True)) / np.sqrt(xd.var(ax, keepdims=True) + float(scalar(epsilon)))
    if gamma is not None:  # gamma/beta span the normalized (trailing) axes
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


@op("l2_norm")
def l2_norm(ctx, x, axes=None, epsilon=1e-12):
    ax = axis_list(axes, x.ndim) if axes is not None else tuple(range(max(x.ndim - 3, 0), x.ndim))
    norm = np.sqrt(np.maximum(np.sum(x.astype(np.float64) ** 2, axis=ax, keepdims=True), float(scalar(epsilon))))
    return x / norm


@op("local_response_norm")
def local_response_norm(ctx, x, size, alpha=1e-4, beta=0.75, k=1.0):
    size = int(scalar(size))
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
    acc = sliding_window_view(sq, size, axis=1).sum(-1)
    return x / (float(scalar(k)) + float(scalar(alpha)) / size * acc) ** float(scalar(beta))


# ------------------------------------------------------------------------------------------ activations


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


@op("relu")
def relu(ctx, x):
    return np.maximum(x, 0)


@op("relu6")
def relu6(ctx, x):
    return np.clip(x, 0, 6)


@op("sigmoid")
def sigmoid(ctx, x):
    return _sigmoid(x)


@op("sigmoid_hard")
def sigmoid_hard(ctx, x, alpha=0.2, beta=0.5):
    return np.clip(float(scalar(alpha)) * x + float(scalar(beta)), 0, 1)


@op("silu")
def silu(ctx, x):
    return x * _sigmoid(x)


@op("tanh")
def tanh(ctx, x):
    return np.tanh(x)


@op("gelu")
def gelu(ctx, x, mode="EXACT"):
    mode = str(mode)
    xd = x.astype(np.float64)
    if mode == "EXACT":
        y = 0.5 * xd * (1.0 + erf(xd / math.sqrt(2.0)))
    elif mode == "TANH_APPROXIMATION":
        y = 0.5 * xd * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (xd + 0.044715 * xd ** 3)))
    elif mode == "SIGMOID_APPROXIMATION":
        y = xd * _sigmoid(1.702 * xd)
    else:
        raise ValueError(f"unknown gelu mode {mode}")
    return y


@op("leaky_relu")
def leaky_relu(ctx, x, alpha=0.01):
    return np.where(x >= 0, x, float(scalar(alpha)) * x)


@op("prelu")
def prelu(ctx, x, alpha):
    a = np.asarray(alpha).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, a * x)


@op("elu")
def elu(ctx, x, alpha=1.0):
    return np.where(x > 0, x, float(scalar(alpha)) * np.expm1(np.minimum(x, 0)))


@op("softplus")
def softplus(ctx, x):
    return np.logaddexp(0, x.astype(np.float64))


@op("softsign")
def softsign(ctx, x):
    return x / (1 + np.abs(x))


@op("clamped_relu")
def clamped_relu(ctx, x, alpha=0.0, beta=6.0):
    return np.minimum(np.where(x >= 0, x, float(scalar(alpha)) * x), float(scalar(beta)))


@op("thresholded_relu")
def thresholded_relu(ctx, x, alpha=1.0):
    return np.where(x > float(scalar(alpha)), x, 0)


@op("scaled_tanh")
def scaled_tanh(ctx, x, alpha=1.0, beta=1.0):
    return float(scalar(alpha)) * np.tanh(float(scalar(beta)) * x)


@op("linear_activation")
def linear_activation(ctx, x, alpha=1.0, beta=0.0):
    return float(scalar(alpha)) * x + float(scalar(beta))


@op("softmax")
def softmax(ctx, x, axis=-1):
    ax = int(scalar(axis))
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(axis=ax, keepdims=True))
    return e / e.sum(axis=ax, keepdims=True)


@op("scaled_dot_product_attention")
def sdpa(ctx, query, key, value, attn_mask=None):
    q, k, v = (a.astype(np.float64) for a in (query, key, value))
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        scores = np.where(m, scores, -np.inf) if m.dtype == np.bool_ else scores + m
    scores = scores - scores.max(-1, keepdims=True)
    e = np.exp(scores)
    return np.matmul(e / e.sum(-1, keepdims=True), v)


# ------------------------------------------------------------------------------------------ resampling


@op("upsample_nearest_neighbor")
def upsample_nearest_neighbor(ctx, x, scale_factor_height=1, scale_factor_width=1):
    sh, sw = float(scalar(scale_factor_height)), float(scalar(scale_factor_width))
    H, W = x.shape[-2:]
    oh, ow = int(math.floor(H * sh)), int(math.floor(W * sw))
    rows = np.minimum(np.floor(np.arange(oh) / sh).astype(int), H - 1)
    cols = np.minimum(np.floor(np.arange(ow) / sw).astype(int), W - 1)
    return x[..., rows, :][..., cols]
