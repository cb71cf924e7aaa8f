"""Output specs (edgepack.core.outspec): the declaration syntax, batch axes moved samples-first by run_batched,
channel groups judged as virtual outputs, groups detected from per-channel ranges. numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.core import outspec
from edgepack.core.batching import CALL_BATCH, CALLS, run_batched
from edgepack.core.limits import Limits
from edgepack.core.metrics import parity
from edgepack.core.outspec import AUTO, Group, OutputSpec

# ---------------------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize("text, spec", [
    ("scores", OutputSpec("scores")),
    ("sequence,batch_axis=1", OutputSpec("sequence", batch_axis=1)),
    ("regression,batch_axis=none", OutputSpec("regression", batch_axis=None)),
    ("regression[0:4]+scores[4:22],axis=1",
     OutputSpec("other", groups=(Group("regression", 0, 4), Group("scores", 4, 22)), group_axis=1)),
    ("scores[4:22]+regression[0:4],axis=2,batch_axis=0",
     OutputSpec("other", 0, (Group("regression", 0, 4), Group("scores", 4, 22)), 2)),
    ("other,conf=0.25,iou=0.5", OutputSpec("other", params=(("conf", "0.25"), ("iou", "0.5")))),
])
def test_parse_and_round_trip(text, spec):
    assert outspec.parse(text) == spec
    assert outspec.parse(spec.text()) == spec
    assert outspec.from_dict(spec.to_dict()) == spec


def test_old_manifest_kind_strings_still_load():
    assert outspec.from_dict("scores") == OutputSpec("scores", batch_axis=AUTO)
    assert outspec.from_dict({"kind": "regression"}) == OutputSpec("regression")


@pytest.mark.parametrize("text, words", [
    ("", "no kind"), ("boxes", "unknown output kind 'boxes'"), ("scores,batch_axis=x", "not an integer"),
    ("scores,batch_axis=-1", "must be ≥ 0"), ("regression[0:4]+scores[2:22]", "overlap"),
    ("regression[4:4]", "empty"), ("regression[0:4],axis=0", "axis 0 holds the samples"),
    ("scores,axis=1", "no groups"), ("regression[0:4]+scores", "not KIND[START:STOP]"), ("scores,conf", "key=value"),
    ("other,a=1,a=2", "given twice"),
])
def test_parse_refuses_with_a_readable_reason(text, words):
    with pytest.raises(ValueError, match=None) as e:
        outspec.parse(text)
    assert words in str(e.value)


def test_parse_declaration_and_the_cli_one_line_error(cli, tmp_path):
    assert outspec.parse_declaration("logits=sequence,batch_axis=1") == ("logits", OutputSpec("sequence", 1))
    res = cli("build", tmp_path / "m.onnx", "-t", "android-ort-fp32", "--output", "logits=sequence,batch_axis=x")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: cannot parse --output 'logits=sequence,batch_axis=x'")
    assert "not an integer" in lines[0]
    assert lines[1].startswith("hint:") and "regression[0:4]+scores[4:22],axis=1" in lines[1] and len(lines) == 2


def test_model_config_outputs_take_the_same_syntax(tmp_path):
    from edgepack.errors import ConfigError
    from edgepack.signature import load_model_config

    cfg = tmp_path / "m.toml"
    cfg.write_text('[outputs]\nlogits = "sequence,batch_axis=1"\noutput0 = "regression[0:4]+scores[4:22],axis=1"\n')
    _, outs = load_model_config(str(cfg))
    assert outs["logits"] == OutputSpec("sequence", 1)
    assert [g.kind for g in outs["output0"].groups] == ["regression", "scores"]
    cfg.write_text('[outputs]\nlogits = "sequence,batch_axis=one"\n')
    with pytest.raises(ConfigError, match="outputs.logits: batch_axis=one"):
        load_model_config(str(cfg))


def test_help_documents_batch_axis_and_groups():
    from typer.testing import CliRunner

    from edgepack.cli import app

    res = CliRunner().invoke(app, ["build", "--help"], env={"COLUMNS": "2000", "TERMINAL_WIDTH": "2000"})
    assert "batch_axis=N|none" in res.stdout and "'output0=regression[0:4]+scores[4:22],axis=1'" in res.stdout


# ---------------------------------------------------------------------------------------------- batch axes


def _time_first(feed):  # (B, T) → (T, B, 3): a CTC-style output; "emb" keeps the batch first
    x = feed["x"]
    return {"logits": np.stack([x.T, -x.T, x.T * 2], -1), "emb": x[:, :2]}


def test_run_batched_keeps_every_time_step_samples_first():
    x = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    for batch in (None, 1, 2):  # dynamic, fixed 1, fixed 2 with a padded last call
        out = run_batched(_time_first, {"x": x}, batch, out_axes={"logits": 1})
        assert out["logits"].shape == (5, 7, 3) and out["emb"].shape == (5, 2)
        np.testing.assert_array_equal(out["logits"][:, :, 0], x)  # every step of every sample, in order


def test_run_batched_auto_finds_the_only_batch_sized_axis_and_refuses_ambiguity():
    x = np.ones((1, 7), np.float32)
    assert run_batched(_time_first, {"x": x}, 1)["logits"].shape == (1, 7, 3)  # (7, 1, 3): axis 1 is the only 1
    with pytest.raises(ValueError, match="batch axis is ambiguous"):
        run_batched(lambda f: {"y": np.zeros((9, 3, 3))}, {"x": np.ones((3, 2))}, None)
    with pytest.raises(ValueError, match="not found"):
        run_batched(lambda f: {"y": np.zeros((9, 4))}, {"x": np.ones((3, 2))}, None)


def test_run_batched_batchless_output_is_one_tensor_per_sample():
    seen = []

    def infer(feed):
        seen.append(len(feed["x"]))
        return {"y": np.full((4, 4), feed["x"].sum())}

    out = run_batched(infer, {"x": np.arange(3, dtype=np.float32)[:, None]}, None, out_axes={"y": None})
    assert seen == [1, 1, 1] and out["y"].shape == (3, 4, 4) and out["y"][2, 0, 0] == 2


def test_calls_mode_returns_raw_shapes_and_call_batches():
    raw = run_batched(_time_first, {"x": np.ones((3, 7), np.float32)}, 4, out_axes=CALLS)
    assert raw["logits"].shape == (1, 7, 4, 3) and list(raw[CALL_BATCH]) == [4]  # padded to the fixed batch


def test_resolve_axis_declared_traced_and_refused():
    spec = OutputSpec("sequence", batch_axis=1)
    axis, warns, problem = outspec.resolve_axis("logits", spec, [((22, 2, 9), 2), ((22, 3, 9), 3)], (1, None))
    assert axis == 1 and problem is None
    assert warns == ["output 'logits': the model file declares shape 1x?, but the model returns 22x2x9 for a call of "
                     "2 samples (and 22x3x9 for 3)"]
    axis, _, problem = outspec.resolve_axis("logits", None, [((22, 1, 9), 1)])
    assert problem is not None and "leading axis (size 22) is not the batch, axis 1 is" in problem[0]
    assert "--output logits=KIND,batch_axis=1" in problem[1]
    _, _, problem = outspec.resolve_axis("y", None, [((22, 9), 2), ((22, 9), 3)])
    assert "no axis has the batch's size" in problem[0] and "batch_axis=none" in problem[1]
    axis, warns, problem = outspec.resolve_axis("y", OutputSpec("other", batch_axis=0), [((22, 2, 9), 2)])
    assert axis == 0 and problem is None and "declared batch_axis=0, but the model returns 22x2x9" in warns[0]
    assert "the batch looks like axis 1" in warns[0]
    assert outspec.resolve_axis("s", None, [((2, 10), 2), ((3, 10), 3)]) == (0, [], None)


# ---------------------------------------------------------------------------------------------- groups


def _yolo(rng, n=64, classes=18, anchors=50):
    boxes = rng.uniform(0, 320, (n, 4, anchors))
    scores = 1 / (1 + np.exp(-rng.normal(-2, 2, (n, classes, anchors))))
    return np.concatenate([boxes, scores], 1).astype(np.float32)


def _crushed(y):
    out = y.copy()
    out[:, 4:] = (out[:, 4:] > 0.5) * 1.26  # the score channels take two values; boxes exact
    return out


def test_detect_groups_from_per_channel_ranges():
    y = _yolo(np.random.default_rng(0))
    groups, note = outspec.detect_groups(y, "other")
    assert groups == (Group("other", 0, 4), Group("other", 4, 22)) and note.startswith("detected: per-channel ranges")
    assert outspec.detect_groups(y[:, 4:], "other") == ((), "")  # one scale
    assert outspec.detect_groups(y[:, :, 0], "other") == ((), "")  # 2-D outputs are not split
    interleaved = y[:, np.r_[0, 4, 1, 5, 2, 6, 3, 7]]
    groups, note = outspec.detect_groups(interleaved, "other")
    assert groups == () and "smaller" in note  # the caller turns this into a warning row


def test_expand_makes_virtual_outputs():
    y = _yolo(np.random.default_rng(1))
    spec = outspec.parse("regression[0:4]+scores[4:22],axis=1")
    arrays, kinds = outspec.expand({"output0": y, "other": y[:, :1]}, {"output0": spec})
    assert set(arrays) == {"output0[0:4]", "output0[4:22]", "other"} and kinds == {"output0[0:4]": "regression",
                                                                                 "output0[4:22]": "scores"}
    np.testing.assert_array_equal(arrays["output0[4:22]"], y[:, 4:22])
    assert outspec.uncovered(outspec.parse("regression[0:4]+scores[6:22],axis=1"), 24) == [(4, 6), (22, 24)]


INT8 = Limits(max_rel_error=0.05, min_cosine=0.98, min_top1_agreement=0.98)


@pytest.mark.parametrize("seed", range(20))
def test_crushed_scores_are_caught_per_group_never_a_false_alarm(seed):
    """The issue's detector: p99 |Δ|/range over the whole tensor PASSES crushed scores; per group they fail (declared
    and detected groups), and a correct bundle (int8-sized noise on every channel group) passes."""
    rng = np.random.default_rng(seed)
    ref = _yolo(rng)
    good = ref.copy()
    good[:, :4] += rng.normal(0, 0.3, good[:, :4].shape)  # ~0.1 % of the pixel range
    good[:, 4:] += rng.normal(0, 0.002, good[:, 4:].shape)
    bad = _crushed(ref)
    whole = parity({"output0": ref}, {"output0": bad}, INT8, kinds={"output0": "regression"})
    assert whole, "the whole-tensor metric hides the score channels (the issue's PASS)"
    declared = {"output0": outspec.parse("regression[0:4]+scores[4:22],axis=1")}
    groups, note = outspec.detect_groups(ref, "other")
    detected = {"output0": OutputSpec("other", groups=groups, note=note)}
    for specs in (declared, detected):
        caught = parity({"output0": ref}, {"output0": bad}, INT8, kinds={"output0": "other"}, specs=specs)
        assert not caught and [c.name for c in caught.checks if not c.passed][0].endswith("[output0[4:22]]")
        assert "output0[4:22]" in caught.kinds and "along axis 1" in caught.kinds["output0[4:22]"][1]
        assert parity({"output0": ref}, {"output0": good}, INT8, kinds={"output0": "other"}, specs=specs)
    assert caught.kinds["output0[4:22]"][1].endswith(f"({note})")  # how the group was found is in the row's note


@pytest.mark.parametrize("seed", range(20))
def test_every_time_step_is_judged(seed):
    """A (T, B, C) output moved samples-first keeps all T steps: a candidate wrong on every step but the first
    fails token agreement; the sliced view (step 0 only, as before) would have passed it."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(0, 3, (22, 40, 12)).astype(np.float32)  # what the model returns: time first
    ref = run_batched(lambda f: {"logits": raw[:, f["i"][:, 0]]}, {"i": np.arange(40)[:, None]}, None,
                      out_axes={"logits": 1})["logits"]
    assert ref.shape == (40, 22, 12)
    bad = ref.copy()
    bad[:, 1:] = bad[:, 1:, ::-1]
    good = ref + rng.normal(0, 1e-4, ref.shape).astype(np.float32)
    lim = Limits(min_token_agreement=0.98)
    assert not parity({"logits": ref}, {"logits": bad}, lim, kinds={"logits": "sequence"})
    assert parity({"logits": ref}, {"logits": good}, lim, kinds={"logits": "sequence"})
    assert parity({"logits": ref[:, :1]}, {"logits": bad[:, :1]}, lim, kinds={"logits": "sequence"})


# ---------------------------------------------------------------------------------------------- build-time specs


def test_build_time_specs_detect_warn_and_refuse():
    from edgepack import pipeline
    from edgepack.errors import ConfigError
    from edgepack.report import OutputKindInfo

    y = _yolo(np.random.default_rng(3))
    other = {"output0": OutputKindInfo(kind="other", how="inferred")}
    specs, warns = pipeline.output_specs({"output0": y}, {}, {"output0": 0}, other)
    assert [g.label() for g in specs["output0"].groups] == ["[0:4]", "[4:22]"] and specs["output0"].batch_axis == 0
    assert warns == []
    mixed = y[:, np.r_[0, 4, 1, 5, 2, 6, 3, 7]]  # boxes and scores interleaved: no few contiguous groups
    specs, warns = pipeline.output_specs({"output0": mixed}, {}, {}, other)
    assert not specs["output0"].groups and len(warns) == 1
    assert warns[0].startswith("output 'output0': the whole-tensor metric hides its small-range channels")
    declared = {"output0": outspec.parse("regression[0:4]+scores[6:22],axis=1")}
    specs, warns = pipeline.output_specs({"output0": y}, declared, {}, other)
    assert warns == ["output 'output0': channels 4:6 along axis 1 are in no declared group and are not judged"]
    with pytest.raises(ConfigError, match=r"group scores\[4:30\] runs past axis 1's 22 channels"):
        pipeline.output_specs({"output0": y}, {"output0": outspec.parse("regression[0:4]+scores[4:30]")}, {}, other)
    scores = {"output0": OutputKindInfo(kind="scores", how="declared")}
    assert not pipeline.output_specs({"output0": y}, {}, {}, scores)[0]["output0"].groups  # never split class scores
