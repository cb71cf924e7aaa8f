"""Weight decompression ops (``constexpr_*``): what ``coremltools.optimize`` writes for compressed weights.

Signatures changed at iOS18; both forms are read here:

* iOS16/17: ``constexpr_affine_dequantize(quantized_data, zero_point, scale, axis)``,
  ``constexpr_lut_to_dense(lut[2^n], indices: uint8 packed, shape)``, ``constexpr_sparse_to_dense(nonzero_data,
  mask: uint8 packed, shape)``, ``constexpr_cast(source_val, output_dtype)``.
* iOS18: ``constexpr_blockwise_shift_scale(data, scale, offset?)``, ``constexpr_lut_to_dense(indices: uintN,
  lut[*blocks, 2^n, vector], vector_axis?)``, ``constexpr_sparse_to_dense(nonzero_data, mask: uint1)``.
"""

from __future__ import annotations

import numpy as np

from edgepack.backends.coreml.mil.program import NUMPY_DTYPES, unpack_bits
from edgepack.backends.coreml.mil.registry import op, scalar


def _repeat_blocks(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast per-block parameters (shape[i] divisible by a.shape[i]) over the full tensor."""
    for ax, (full, part) in enumerate(zip(shape, a.shape)):
        if part != full:
            if full % part:
                raise ValueError(f"block parameter of shape {a.shape} does not tile {shape}")
            a = np.repeat(a, full // part, axis=ax)
    return a


@op("constexpr_affine_dequantize")
def affine_dequantize(ctx, quantized_data, zero_point, scale, axis):
    q = quantized_data.astype(np.float32)
    shape = [1] * q.ndim
    ax = int(scalar(axis)) % q.ndim
    zp = np.asarray(zero_point, np.float32)
    sc = np.asarray(scale, np.float32)
    if zp.ndim == 1 and zp.size > 1:
        shape[ax] = -1
        zp = zp.reshape(shape)
    if sc.ndim == 1 and sc.size > 1:
        shape = [1] * q.ndim
        shape[ax] = -1
        sc = sc.reshape(shape)
    return (q - zp) * sc


@op("constexpr_blockwise_shift_scale")
def blockwise_shift_scale(ctx, data, scale, offset=None):
    d = data.astype(np.float32)
    if offset is not None:
        d = d - _repeat_blocks(np.asarray(offset, np.float32), d.shape)
    return d * _repeat_blocks(np.asarray(scale, np.float32), d.shape)


@op("constexpr_lut_to_dense")
def lut_to_dense(ctx, lut, indices, shape=None, vector_axis=None):
    if shape is not None:  # iOS16 form: flat lut, packed uint8 indices, explicit shape
        out_shape = tuple(int(v) for v in np.asarray(shape).ravel())
        lut = np.asarray(lut).ravel()
        nbits = int(np.log2(lut.size))
        count = int(np.prod(out_shape, dtype=np.int64))
        idx = unpack_bits(np.asarray(indices, np.uint8).tobytes(), nbits, count)
        return lut[idx].reshape(out_shape)
    # iOS18 form: indices already unpacked to their own shape; lut[*block_counts, 2^n, vector_size]
    idx = np.asarray(indices).astype(np.int64)
    lut = np.asarray(lut)
    k = idx.ndim
    vec = lut.shape[-1]
    blocks = lut.shape[:k]
    block_size = [s // b for s, b in zip(idx.shape, blocks)]
    grid = np.meshgrid(*[np.arange(s) // bs for s, bs in zip(idx.shape, block_size)], indexing="ij")
    vals = lut[tuple(grid) + (idx,)]  # idx.shape + (vec,)
    if vec == 1:
        return vals[..., 0]
    ax = int(scalar(vector_axis, 0)) % k
    vals = np.moveaxis(vals, -1, ax + 1)  # place the vector right after its axis, then merge
    new_shape = list(idx.shape)
    new_shape[ax] *= vec
    return vals.reshape(new_shape)


@op("constexpr_sparse_to_dense")
def sparse_to_dense(ctx, nonzero_data, mask, shape=None):
    data = np.asarray(nonzero_data)
    if shape is not None:  # iOS16: mask is packed uint8 bits, LSB first
        out_shape = tuple(int(v) for v in np.asarray(shape).ravel())
        count = int(np.prod(out_shape, dtype=np.int64))
        m = np.unpackbits(np.asarray(mask, np.uint8), bitorder="little")[:count].reshape(out_shape)
    else:
        m = np.asarray(mask)
    out = np.zeros(m.shape, data.dtype)
    out[m != 0] = data
    return out


@op("constexpr_cast")
def constexpr_cast(ctx, source_val, output_dtype):
    return np.asarray(source_val).astype(NUMPY_DTYPES[str(output_dtype)])
