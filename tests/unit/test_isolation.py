"""Workers: warm per framework family within a build, separate across families, crash/hang → one-line errors."""

from __future__ import annotations

import os

import pytest
from fakes import work

from edgepack.errors import ConversionFailed, InputError
from edgepack.isolation import Workers, family_of, run_isolated


def test_family_policy():
    assert family_of(work.pid, "backend:tflite") == "backend:tflite"
    from edgepack.sources import onnx, torch

    assert family_of(onnx._run) == "onnx" and family_of(torch.probe) == "torch"


def test_one_warm_worker_per_family_within_a_build():
    with Workers() as w:
        a = run_isolated(work.pid, what="a", family="backend:x")
        b = run_isolated(work.pid, what="b", family="backend:x")
        c = run_isolated(work.pid, what="c", family="backend:y")
        assert a == b != c and a != os.getpid()
        assert w.started == {"backend:x": 1, "backend:y": 1}
    # outside a build each call gets a fresh one-shot worker
    assert run_isolated(work.pid, what="d") != run_isolated(work.pid, what="e")


def test_crash_is_one_line_and_the_worker_is_replaced():
    with Workers() as w:
        before = run_isolated(work.pid, what="warm", family="f")
        with pytest.raises(ConversionFailed) as e:
            run_isolated(work.crash, what="the conversion", family="f")
        assert e.value.message.startswith("the conversion crashed the worker process") and "EDGEPACK_DEBUG" in e.value.hint
        after = run_isolated(work.pid, what="again", family="f")
        assert after != before and w.started["f"] == 2


def test_timeout_names_the_work_and_the_limit():
    with Workers():
        with pytest.raises(ConversionFailed, match="slow step did not finish within 1 s"):
            run_isolated(work.sleep, 30, what="slow step", family="g", timeout=1)


def test_errors_come_back_as_themselves_or_one_line():
    with pytest.raises(InputError) as e:
        run_isolated(work.user_error, what="x")
    assert e.value.hint == "a hint from the worker"
    with pytest.raises(ConversionFailed) as e:
        run_isolated(work.bug, what="y")
    assert e.value.message == "y failed: ValueError: a converter bug"
