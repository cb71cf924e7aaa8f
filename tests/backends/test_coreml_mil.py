"""edgepack's Core ML evaluator, op by op against torch / numpy references, on hand-built programs.

No conversion here (see tests/backends/test_coreml.py for converted packages): programs are assembled from ``Op``
records, so these tests need neither coremltools' converter nor a Mac.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from edgepack.backends.coreml.mil import OPS, EvaluationError, Evaluator
from edgepack.backends.coreml.mil.program import Arg, Op, Program, TensorType, WeightFile, decode_raw, unpack_bits
from edgepack.errors import InputError, RuntimeUnavailable

torch = pytest.importorskip("torch")
F = torch.nn.functional
RNG = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run_op(op_type: str, out_shape, *, dtype="fp32", ios=18, n_out=1, **params):
    """One-op program: array parameters become program inputs/constants, the rest inline values."""
    inputs, args, feeds = [], {}, {}
    for k, v in params.items():
        if isinstance(v, list) and v and isinstance(v[0], np.ndarray):  # variadic
            names = []
            for i, a in enumerate(v):
                feeds[f"{k}{i}"] = a
                inputs.append((f"{k}{i}", TensorType("fp32", a.shape)))
                names.append(Arg(name=f"{k}{i}"))
            args[k] = names
        elif isinstance(v, np.ndarray) and v.dtype == np.float32 and k in ("x", "y", "query", "key", "value"):
            feeds[k] = v.astype(np.float16) if dtype == "fp16" else v
            inputs.append((k, TensorType("fp16" if dtype == "fp16" else "fp32", v.shape)))
            args[k] = [Arg(name=k)]
        else:
            args[k] = [Arg(value=v)]
    shapes = out_shape if n_out > 1 else [out_shape]
    outs = [(f"out{i}", TensorType(dtype, tuple(s))) for i, s in enumerate(shapes)]
    op = Op(type=op_type, name=f"{op_type}_0", inputs=args, outputs=outs)
    prog = Program(path=None, opset="CoreML8", ios=ios, spec_version=9, inputs=inputs,
                   outputs=[n for n, _ in outs], output_types=dict(outs), ops=[op], description=None)
    got = Evaluator(prog).run(feeds)
    return tuple(got[n] for n, _ in outs) if n_out > 1 else got["out0"]


def close(got, ref, atol=1e-5):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), atol=atol, rtol=1e-5)


T = torch.from_numpy


# ------------------------------------------------------------------------------------------ convolution


@pytest.mark.parametrize("groups,cin,cout,stride,dil,pad", [
    (1, 3, 8, 1, 1, (1, 1, 1, 1)), (8, 8, 8, 1, 1, (1, 1, 1, 1)), (4, 8, 16, 2, 1, (1, 1, 1, 1)),
    (1, 4, 6, 1, 2, (2, 2, 2, 2)), (2, 4, 6, (2, 1), 1, (0, 1, 2, 0))], ids=["plain", "depthwise", "grouped",
                                                                          "dilated", "asym-pad"])
def test_conv_matches_torch(groups, cin, cout, stride, dil, pad):
    x, w, b = rand(2, cin, 9, 10), rand(cout, cin // groups, 3, 3), rand(cout)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    ref = F.conv2d(F.pad(T(x), (pad[2], pad[3], pad[0], pad[1])), T(w), T(b), stride=s, dilation=dil, groups=groups)
    got = run_op("conv", tuple(ref.shape), x=x, weight=w, bias=b, strides=np.array(s, np.int32),
                 pad_type="custom", pad=np.array(pad, np.int32), dilations=np.array([dil, dil], np.int32),
                 groups=np.int32(groups))
    close(got, ref, 1e-4)


def test_conv_same_padding_and_conv1d():
    x, w = rand(1, 4, 11, 7), rand(5, 4, 3, 3)
    ref = F.conv2d(T(x), T(w), padding="same")
    close(run_op("conv", (1, 5, 11, 7), x=x, weight=w, pad_type="same"), ref, 1e-4)
    x1, w1 = rand(2, 3, 12), rand(4, 3, 5)
    close(run_op("conv", (2, 4, 8), x=x1, weight=w1, pad_type="valid"), F.conv1d(T(x1), T(w1)), 1e-4)


def test_conv_transpose_matches_torch():
    x, w = rand(1, 4, 5, 5), rand(4, 3, 3, 3)
    ref = F.conv_transpose2d(T(x), T(w), stride=2, padding=1)
    got = run_op("conv_transpose", tuple(ref.shape), x=x, weight=w, strides=np.array([2, 2], np.int32),
                 pad_type="custom", pad=np.array([1, 1, 1, 1], np.int32))
    close(got, ref, 1e-4)


# ------------------------------------------------------------------------------------------ pooling


@pytest.mark.parametrize("ceil", [False, True])
def test_pools_match_torch(ceil):
    x = rand(1, 3, 7, 7)
    ref = F.max_pool2d(T(x), 3, 2, padding=1, ceil_mode=ceil)
    common = dict(kernel_sizes=np.array([3, 3], np.int32), strides=np.array([2, 2], np.int32), pad_type="custom",
                  pad=np.array([1, 1, 1, 1], np.int32), ceil_mode=np.bool_(ceil))
    close(run_op("max_pool", tuple(ref.shape), x=x, **common), ref)
    for exclude in (False, True):
        ref = F.avg_pool2d(T(x), 3, 2, padding=1, ceil_mode=ceil, count_include_pad=not exclude)
        got = run_op("avg_pool", tuple(ref.shape), x=x, exclude_padding_from_average=np.bool_(exclude), **common)
        close(got, ref)


# ------------------------------------------------------------------------------------------ linear, norms


def test_linear_and_matmul():
    x, w, b = rand(2, 5, 8), rand(6, 8), rand(6)
    close(run_op("linear", (2, 5, 6), x=x, weight=w, bias=b), F.linear(T(x), T(w), T(b)), 1e-5)
    a, c = rand(2, 3, 4, 5), rand(2, 3, 6, 5)
    got = run_op("matmul", (2, 3, 4, 6), x=a, y=c, transpose_x=np.bool_(False), transpose_y=np.bool_(True))
    close(got, T(a) @ T(c).transpose(-1, -2), 1e-5)


def test_norms():
    x = rand(2, 4, 5, 5)
    mean, var, g, b = rand(4), np.abs(rand(4)) + 0.5, rand(4), rand(4)
    ref = F.batch_norm(T(x), T(mean), T(var), T(g), T(b), eps=1e-5)
    close(run_op("batch_norm", x.shape, x=x, mean=mean, variance=var, gamma=g, beta=b, epsilon=np.float32(1e-5)),
          ref)
    y, g2, b2 = rand(2, 6, 16), rand(16), rand(16)
    ref = F.layer_norm(T(y), (16,), T(g2), T(b2), eps=1e-5)
    close(run_op("layer_norm", y.shape, x=y, axes=np.array([-1], np.int32), gamma=g2, beta=b2,
                 epsilon=np.float32(1e-5)), ref)
    ref = F.instance_norm(T(x), weight=T(g), bias=T(b), eps=1e-5)
    close(run_op("instance_norm", x.shape, x=x, gamma=g, beta=b, epsilon=np.float32(1e-5)), ref)


# ------------------------------------------------------------------------------------------ activations


@pytest.mark.parametrize("name,mode,ref", [
    ("relu", None, F.relu), ("sigmoid", None, torch.sigmoid), ("silu", None, F.silu), ("tanh", None, torch.tanh),
    ("gelu", "EXACT", F.gelu), ("gelu", "TANH_APPROXIMATION", lambda t: F.gelu(t, approximate="tanh")),
    ("gelu", "SIGMOID_APPROXIMATION", lambda t: t * torch.sigmoid(1.702 * t)), ("elu", None, F.elu),
    ("softplus", None, F.softplus), ("relu6", None, F.relu6), ("erf", None, torch.erf)],
    ids=lambda v: v if isinstance(v, str) else None)
def test_activations(name, mode, ref):
    x = rand(3, 40, scale=3.0)
    kw = {"mode": mode} if mode else {}
    close(run_op(name, x.shape, x=x, **kw), ref(T(x)), 2e-6)


def test_gelu_modes_differ_enough_for_parity_to_notice():
    x = np.linspace(-4, 4, 801, dtype=np.float32)
    exact = run_op("gelu", x.shape, x=x, mode="EXACT")
    tanh = run_op("gelu", x.shape, x=x, mode="TANH_APPROXIMATION")
    assert np.abs(exact - tanh).max() > 1e-4  # the coreml fp32 row's max_abs_error


def test_softmax_leaky_prelu_clip():
    x = rand(2, 3, 4, 5, scale=4.0)
    close(run_op("softmax", x.shape, x=x, axis=np.int32(1)), torch.softmax(T(x), 1), 1e-6)
    close(run_op("leaky_relu", x.shape, x=x, alpha=np.float32(0.1)), F.leaky_relu(T(x), 0.1))
    a = np.abs(rand(3))
    close(run_op("prelu", x.shape, x=x, alpha=a), F.prelu(T(x), T(a)))
    close(run_op("clip", x.shape, x=x, alpha=np.float32(-1), beta=np.float32(2)), T(x).clamp(-1, 2))


def test_scaled_dot_product_attention():
    q, k, v = rand(1, 2, 5, 8), rand(1, 2, 7, 8), rand(1, 2, 7, 8)
    ref = F.scaled_dot_product_attention(T(q), T(k), T(v))
    close(run_op("scaled_dot_product_attention", (1, 2, 5, 8), query=q, key=k, value=v), ref, 1e-5)


# ------------------------------------------------------------------------------------------ elementwise, reductions


def test_elementwise_and_reductions():
    x, y = rand(2, 3, 4), rand(1, 3, 1)
    for name, fn in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("real_div", np.divide),
                     ("maximum", np.maximum), ("minimum", np.minimum)):
        close(run_op(name, x.shape, x=x, y=y), fn(x, y))
    for name, fn in (("reduce_mean", np.mean), ("reduce_sum", np.sum), ("reduce_max", np.max)):
        got = run_op(name, (2, 1, 4), x=x, axes=np.array([1], np.int32), keep_dims=np.bool_(True))
        close(got, fn(x, axis=1, keepdims=True))
    got = run_op("reduce_argmax", (2, 4), x=x, axis=np.int32(1), dtype="int32")
    np.testing.assert_array_equal(got, x.argmax(1))
    close(run_op("rsqrt", x.shape, x=np.abs(x) + 1, epsilon=np.float32(0)), 1 / np.sqrt(np.abs(x) + 1))


# ------------------------------------------------------------------------------------------ shapes, indexing


def test_reshape_zero_semantics_depend_on_opset():
    x = rand(2, 50)
    assert run_op("reshape", (1, 1, 2, 50), x=x, shape=np.array([1, 0, -1, 0], np.int32), ios=17).shape == (1, 1, 2,
                                                                                                             50)
    x3 = rand(2, 5, 10)
    assert run_op("reshape", (2, 25, 2), x=x3, shape=np.array([0, -1, 2], np.int32), ios=16).shape == (2, 25, 2)
    with pytest.raises(EvaluationError, match="reshape"):
        run_op("reshape", (1, 1, 2, 50), x=x, shape=np.array([1, 0, -1, 0], np.int32), ios=16)


def test_shape_ops():
    x = rand(2, 3, 4)
    close(run_op("transpose", (4, 2, 3), x=x, perm=np.array([2, 0, 1], np.int32)), x.transpose(2, 0, 1))
    close(run_op("concat", (2, 6, 4), values=[x, x], axis=np.int32(1)), np.concatenate([x, x], 1))
    parts = run_op("split", [(2, 1, 4), (2, 2, 4)], n_out=2, x=x, axis=np.int32(1),
                   split_sizes=np.array([1, 2], np.int32))
    close(parts[1], x[:, 1:])
    got = run_op("slice_by_index", (2, 2), x=x, begin=np.array([0, 1, 3], np.int32), end=np.array([0, 3, 4], np.int32),
                 stride=np.array([1, 1, 1], np.int32), begin_mask=np.array([True, False, False]),
                 end_mask=np.array([True, False, False]), squeeze_mask=np.array([False, False, True]))
    close(got, x[:, 1:3, 3])
    close(run_op("slice_by_size", (1, 3, 2), x=x, begin=np.array([1, 0, 2], np.int32),
                 size=np.array([1, -1, 2], np.int32)), x[1:2, :, 2:4])
    close(run_op("gather", (2, 2, 4), x=x, indices=np.array([-1, 0], np.int32), axis=np.int32(1)), x[:, [2, 0]])
    idx = RNG.integers(0, 3, (2, 3, 4)).astype(np.int32)
    close(run_op("gather_along_axis", x.shape, x=x, indices=idx, axis=np.int32(1)), np.take_along_axis(x, idx, 1))
    close(run_op("expand_dims", (2, 1, 3, 4), x=x, axes=np.array([1], np.int32)), x[:, None])
    close(run_op("squeeze", (3, 4), x=x[:1], axes=np.array([0], np.int32)), x[0])
    close(run_op("pad", (2, 3, 7), x=x, pad=np.array([1, 2], np.int32), mode="constant",
                 constant_val=np.float32(0)), np.pad(x, [(0, 0), (0, 0), (1, 2)]))
    close(run_op("tile", (2, 6, 4), x=x, reps=np.array([1, 2, 1], np.int32)), np.tile(x, (1, 2, 1)))
    u = rand(1, 3, 4, 4)
    close(run_op("upsample_nearest_neighbor", (1, 3, 8, 8), x=u, scale_factor_height=np.float32(2),
                 scale_factor_width=np.float32(2)), F.interpolate(T(u), scale_factor=2, mode="nearest"))


# ------------------------------------------------------------------------------------------ fp16 and checks


def test_fp16_rounds_each_op_output():
    x = rand(4, 64)
    got = run_op("softmax", x.shape, x=x, axis=np.int32(-1), dtype="fp16")
    assert got.dtype == np.float16
    expected = torch.softmax(T(x.astype(np.float16).astype(np.float32)), -1).numpy().astype(np.float16)
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2 ** -14, rtol=2 ** -10)


def test_declared_shape_is_checked_after_every_op():
    with pytest.raises(EvaluationError, match="relu_0.*shape"):
        run_op("relu", (3, 3), x=rand(2, 3))


def test_unknown_op_is_named_with_its_node():
    op = Op(type="mystery_op", name="layer7/mystery", inputs={"x": [Arg(name="x")]},
            outputs=[("y", TensorType("fp32", (1,)))])
    prog = Program(path=None, opset="CoreML8", ios=18, spec_version=9, inputs=[("x", TensorType("fp32", (1,)))],
                   outputs=["y"], output_types={"y": TensorType("fp32", (1,))}, ops=[op], description=None)
    ev = Evaluator(prog)
    assert ev.unsupported == [("mystery_op", "layer7/mystery")]
    with pytest.raises(RuntimeUnavailable, match="'mystery_op' \\(node 'layer7/mystery'\\)"):
        ev.run({"x": np.zeros(1, np.float32)})


# ------------------------------------------------------------------------------------------ weights, constexpr


def test_sub_byte_unpacking_is_lsb_first():
    values = np.array([5, 0, 63, 17, 42, 9, 1, 60], np.uint8)  # 6-bit
    bits = np.concatenate([[(v >> i) & 1 for i in range(6)] for v in values]).astype(np.uint8)
    packed = np.packbits(bits, bitorder="little").tobytes()
    np.testing.assert_array_equal(unpack_bits(packed, 6, 8), values)
    np.testing.assert_array_equal(decode_raw(bytes([0x9F]), "int4", (2,)), [-1, -7])


def _blob(dtype_code: int, payload: bytes, offset: int) -> bytes:
    meta = struct.pack("<IIQQQ", 0xDEADBEEF, dtype_code, len(payload), offset + 64, 0).ljust(64, b"\0")
    return meta + payload.ljust(-(-len(payload) // 64) * 64, b"\0")


def test_weight_file_reader(tmp_path):
    w = np.arange(6, dtype=np.float32)
    idx = unpack_bits(bytes([0x21, 0x43]), 4, 4)
    body = _blob(2, w.tobytes(), 64)
    body += _blob(11, bytes([0x21, 0x43]), 64 + len(body))
    path = tmp_path / "weight.bin"
    path.write_bytes(struct.pack("<II", 2, 2).ljust(64, b"\0") + body)
    wf = WeightFile(path)
    np.testing.assert_array_equal(wf.read(64, "fp32", (2, 3)), w.reshape(2, 3))
    np.testing.assert_array_equal(wf.read(64 + 128, "uint4", (4,)), idx)
    with pytest.raises(InputError, match="sentinel"):
        wf.read(128, "fp32", (2, 3))
    with pytest.raises(InputError, match="declares"):
        wf.read(64, "fp16", (2, 3))


def test_constexpr_decompression():
    q = RNG.integers(-127, 128, (4, 6)).astype(np.int8)
    scale, zp = np.abs(rand(4)) / 100, np.zeros(4, np.int8)
    close(run_op("constexpr_affine_dequantize", (4, 6), quantized_data=q, zero_point=zp, scale=scale,
                 axis=np.int32(0)), q * scale[:, None])
    close(run_op("constexpr_blockwise_shift_scale", (4, 6), data=q, scale=np.repeat(scale[:, None], 2, 1)[:, :2]
                 .astype(np.float32)), q * scale[:, None], 1e-6)
    lut = rand(16)
    idx = RNG.integers(0, 16, 24).astype(np.uint8)
    packed = np.packbits(np.stack([(idx >> i) & 1 for i in range(4)], 1).ravel(), bitorder="little")
    close(run_op("constexpr_lut_to_dense", (4, 6), lut=lut, indices=packed, shape=np.array([4, 6], np.uint32)),
          lut[idx].reshape(4, 6))
    lut18 = rand(2, 1, 16, 1)  # two tables along axis 0 (iOS18 form)
    idx18 = idx.reshape(4, 6)
    ref = np.concatenate([lut18[0, 0, idx18[:2], 0], lut18[1, 0, idx18[2:], 0]])
    close(run_op("constexpr_lut_to_dense", (4, 6), lut=lut18, indices=idx18), ref)
    mask = np.array([0b00000101], np.uint8)
    close(run_op("constexpr_sparse_to_dense", (2, 2), nonzero_data=np.array([1.5, 2.5], np.float32), mask=mask,
                 shape=np.array([2, 2], np.uint32)), np.array([[1.5, 0], [2.5, 0]]))


def test_every_registered_op_is_callable():
    assert {"conv", "linear", "matmul", "layer_norm", "batch_norm", "gelu", "silu", "softmax", "max_pool",
            "avg_pool", "reshape", "transpose", "concat", "slice_by_index", "gather", "reduce_mean",
            "constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"} <= set(OPS)


def test_importing_the_evaluator_loads_no_framework():
    code = ("import sys; import edgepack.backends.coreml.mil as e; import edgepack.backends.coreml as c; "
            "import edgepack.backends.coreml.convert, edgepack.backends.coreml.runner; "
            "import edgepack.backends.coreml.device; "
            "e.program.modules(); "
            "bad = [m for m in ('torch', 'tensorflow', 'coremltools') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
