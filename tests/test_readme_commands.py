"""The README's commands as tests (issue 26): ``make paint`` (the default model, its own sampler
settings) paints what the Python API paints, ``$XLXMERT_MODEL`` redirects it, and the shipped model
answers a rendered scene's "where is this" and colour questions."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import build_tiny_model
from xlxmert.cli import main
from xlxmert.data.shapes import world
from xlxmert.data.shapes.render import render_scene
from xlxmert.data.shapes.scene import Scene, SceneObject
from xlxmert.pipelines import AnswerPipeline, PaintPipeline

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "shapes-64"


def make_paint_command(out: Path) -> tuple[list[str], str]:
    """The command ``make paint OUT=out`` runs (from ``make -n``) and its caption."""
    if shutil.which("make") is None:
        pytest.fail("make is needed: the README's first command is `make paint`")
    dry = subprocess.run(
        ["make", "-n", "-s", "paint", f"OUT={out}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    lines = [line for line in dry.stdout.splitlines() if "xlxmert paint" in line]
    assert len(lines) == 1, dry.stdout
    argv = shlex.split(lines[0])
    assert argv[0].endswith("bin/xlxmert") and argv[1] == "paint" and "--model" not in argv
    caption = argv[2]
    # The venv's console script is `xlxmert.cli:main`; run it with this interpreter.
    return [sys.executable, "-m", "xlxmert", *argv[1:]], caption


def run_make_paint(out: Path, **env: str) -> str:
    command, caption = make_paint_command(out)
    environ = {k: v for k, v in os.environ.items() if k != "XLXMERT_MODEL"}
    environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env)
    result = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(out) and out.is_file()
    return caption


def test_make_paint_paints_what_the_python_api_paints(tmp_path):
    out = tmp_path / "painting.png"
    caption = run_make_paint(out)
    assert caption == "a red circle to the left of a blue square at night"
    pipe = PaintPipeline.from_pretrained("models/shapes-64" if Path.cwd() == REPO else SHIPPED)
    expected = pipe(caption).images[0]  # the README's API call: the model's own sampler settings
    with Image.open(out) as painted:
        assert painted.size == expected.size == (64, 64)
        assert painted.convert("RGB").tobytes() == expected.tobytes()
    # Not the paper's sampler (the shipped sampler/config.json is what made it).
    paper = pipe(caption, sampler="mask-predict", steps=4, temperature=0.0, guidance_scale=1.0).images[0]
    assert paper.tobytes() != expected.tobytes()


def test_make_paint_takes_the_model_from_the_environment(tmp_path, monkeypatch, capsys):
    # The same command in this process (a second interpreter start costs more than the painting).
    model = build_tiny_model(tmp_path / "tiny")
    out = tmp_path / "painting.png"
    command, caption = make_paint_command(out)
    monkeypatch.setenv("XLXMERT_MODEL", str(model))
    assert main(command[3:]) == 0 and capsys.readouterr().out.strip() == str(out)
    expected = PaintPipeline.from_pretrained(model)(caption).images[0]
    with Image.open(out) as painted:
        assert painted.size == (16, 16) and painted.convert("RGB").tobytes() == expected.tobytes()


def test_the_shipped_model_paints_the_captions_colour():
    # Beyond the background: the object's pixels have the caption's colour (within 40 per channel).
    pipe = PaintPipeline.from_pretrained(SHIPPED)
    colors = list(world.COLORS)
    images = pipe([f"a large {c} circle in the snow" for c in colors], seed=0).images
    dominant = []
    for image in images:
        pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        share = {
            c: float((np.abs(pixels - np.array(rgb)).max(1) < 40).mean()) for c, rgb in world.COLORS.items()
        }
        dominant.append(max(share, key=share.get))
        assert max(share.values()) > 0.05  # an object of some world colour covers 5% of the image
    right = sum(d == c for d, c in zip(dominant, colors))
    assert right >= 5, dominant  # of 6 (chance 1/6; this model paints red as orange)


def scenes_to_ask() -> list[Scene]:
    """Every place × colour, one large circle or square in the centre (rendered by ShapeScenes)."""
    scenes = []
    for k, (place, color) in enumerate((p, c) for p in world.PLACES for c in world.COLORS):
        shape = ("circle", "square")[k % 2]
        scenes.append(Scene(k, place, (SceneObject(shape, color, "large", 0.5, 0.5),)))
    return scenes


def test_the_shipped_model_answers_where_and_what_colour_on_rendered_scenes():
    pipe = AnswerPipeline.from_pretrained(SHIPPED)
    scenes = scenes_to_ask()
    images = [render_scene(scene, 64, seed=scene.id) for scene in scenes]
    places = pipe(images, ["where is this"] * len(scenes)).answers
    assert places == [scene.place for scene in scenes]  # all 24 right (chance 1/4)
    questions = [f"what color is the {scene.objects[0].shape}" for scene in scenes]
    colors = pipe(images, questions).answers
    right = sum(a == scene.objects[0].color for a, scene in zip(colors, scenes))
    assert right >= 22, list(zip(colors, scenes))  # of 24 (chance 1/6; the model gets 23-24)


def test_the_readme_answer_command_reproduces_the_gallery(capsys):
    scene = REPO / "docs" / "gallery" / "scene.png"
    recorded = (REPO / "docs" / "gallery" / "answer.txt").read_text().splitlines()
    answers = []
    for question in ("where is this", "how many shapes are there", "what color is the triangle"):
        assert main(["answer", str(scene), question, "--model", str(SHIPPED)]) == 0
        answers.extend(capsys.readouterr().out.strip().splitlines())
    assert answers == recorded
