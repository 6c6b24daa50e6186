"""scripts/grid_diagnostics.py: reading colour–shape pairs off grids of prediction-vocabulary words."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "grid_diagnostics.py"


@pytest.fixture(scope="module")
def diag():
    spec = importlib.util.spec_from_file_location("grid_diagnostics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair(diag, color, shape):
    return diag.COLOR_NAMES.index(color) * len(diag.SHAPE_NAMES) + diag.SHAPE_NAMES.index(shape)


def test_named_pairs_are_the_noun_phrases_with_a_colour_and_a_shape(diag):
    got = diag.named_pairs("a red circle to the left of a blue square at night")
    assert got == {pair(diag, "red", "circle"), pair(diag, "blue", "square")}
    assert diag.named_pairs("three shapes at night") == set()
    assert diag.named_pairs("a red shape") == set()


def test_shares_and_presence_of_the_named_pairs(diag):
    n = len(diag.COLOR_NAMES) * len(diag.SHAPE_NAMES)
    red_circle, blue_square = pair(diag, "red", "circle"), pair(diag, "blue", "square")
    red_square = pair(diag, "red", "square")
    mass = torch.zeros(2, n)
    mass[0, red_circle], mass[0, blue_square] = 3.0, 1.0  # only the named pairs
    mass[1, red_square], mass[1, blue_square] = 3.0, 0.4  # red but the wrong shape; too little blue
    pairs = [{red_circle, blue_square}] * 2
    s = diag.shares(mass, pairs)
    assert s["pair"] == pytest.approx((1.0 + 0.4 / 3.4) / 2, abs=1e-3)
    assert s["colour"] == pytest.approx(1.0) and s["shape"] == pytest.approx(1.0)
    p = diag.presence(mass, pairs)
    assert p == {"pair": 0.5, "colour": 0.75, "shape": 0.75}
