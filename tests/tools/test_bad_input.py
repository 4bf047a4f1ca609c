"""Hostile input to the Python API and the tools: one error naming the argument and the fix, nothing done."""

from __future__ import annotations

import random

import pytest

import ascend_patch
from ascend_patch.tools.models import InputError


@pytest.mark.parametrize(("names", "says"), [
    ((None,), "e.g. apply('dinov2') or apply(); got None"),
    ((3,), "got 3"),
    ((["gelu"],), "e.g. apply('gelu', 'seed'); got ['gelu']"),
])  # fmt: skip
def test_apply_with_names_that_are_not_strings(names, says):
    with pytest.raises(TypeError, match=r"apply\(\) takes patch and recipe names as separate strings") as info:
        ascend_patch.apply(*names, device="cpu")
    assert says in str(info.value) and ascend_patch.active() == []


def test_seed_everything_refuses_before_seeding_anything():
    state = random.getstate()
    with pytest.raises(TypeError, match=r"seed must be an int, got 'abc'"):
        ascend_patch.seed_everything("abc")
    assert random.getstate() == state


@pytest.mark.parametrize("threshold", ["abc", 0, -1, True])
def test_verify_threshold(threshold):
    with pytest.raises(InputError, match=r"--threshold must be a number > 0"):
        ascend_patch.verify("dinov2", tiny=True, device="cpu", threshold=threshold)


def test_image_folder_and_unwritable_plot_are_refused_before_any_work(tmp_path, cli):
    run = cli("verify", "dinov2", "--tiny", "--device", "cpu", "--image", tmp_path)
    assert run.code == 2 and run.err == f"ascend-patch verify: error: --image '{tmp_path}' is a folder: give one image file\n"
    (tmp_path / "plot.png").mkdir()
    run = cli("bench", "dinov2", "--tiny", "--device", "cpu", "--plot", tmp_path / "plot.png")
    assert run.code == 2 and "cannot be written" in run.err and run.out == ""
