"""CLI round trips: ``xlxmert paint / caption / answer`` on a tiny model the test builds."""

import pytest
from PIL import Image

from conftest import ANSWERS, IMAGE, build_tiny_model
from xlxmert.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("cli") / "model"))


@pytest.fixture()
def scene(tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("sampler", ["mask-predict", "tl-br", "random", "easy-first"])
def test_paint_one_caption_with_every_sampler(model_dir, tmp_path, capsys, sampler):
    out_png = tmp_path / f"{sampler}.png"
    code, out, err = run(
        capsys,
        "paint",
        "a red circle in the snow",
        "-o",
        str(out_png),
        "--model",
        model_dir,
        "--sampler",
        sampler,
        "--seed",
        "1",
    )
    assert code == 0, err
    assert out.strip() == str(out_png)
    assert Image.open(out_png).size == (IMAGE, IMAGE)


def test_paint_several_captions_grid_strip_and_sampling_options(model_dir, tmp_path, capsys):
    out_png = tmp_path / "grid.png"
    code, out, err = run(
        capsys,
        "paint",
        "a red circle",
        "two green stars",
        "-o",
        str(out_png),
        "--model",
        model_dir,
        "--sampler",
        "random",
        "--steps",
        "20",
        "--temperature",
        "1.0",
        "--anneal",
        "--top-k",
        "4",
        "--guidance-scale",
        "2",
        "--strip",
    )
    assert code == 0, err
    grid = Image.open(out_png)
    assert grid.size[0] > 2 * IMAGE and grid.size[1] > IMAGE  # two tiles side by side
    strip = Image.open(tmp_path / "grid_strip.png")
    assert strip.size[0] > 16 * IMAGE  # 16 frames of the 20 steps per row
    assert strip.size[1] > 2 * IMAGE  # one row per caption


def test_paint_out_dir_writes_one_image_per_caption(model_dir, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "paint",
        "a red circle",
        "a blue square",
        "--out-dir",
        str(tmp_path / "imgs"),
        "--model",
        model_dir,
        "--strip",
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "imgs").iterdir())
    assert names == ["000.png", "000_strip.png", "001.png", "001_strip.png"]


def test_paint_defaults_to_the_models_sampler_settings(model_dir, tmp_path, capsys):
    import shutil

    from xlxmert.sampling import SamplerConfig

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    SamplerConfig("random", temperature=1.0).save_pretrained(folder / "sampler")
    paths = [tmp_path / f"{name}.png" for name in ("default", "explicit", "paper")]
    flags = [[], ["--sampler", "random", "--temperature", "1"], ["--sampler", "mask-predict"]]
    for path, extra in zip(paths, flags):
        assert run(capsys, "paint", "a red circle", "-o", str(path), "--model", str(folder), *extra)[0] == 0
    default, explicit, paper = (Image.open(p).tobytes() for p in paths)
    assert default == explicit and default != paper


def test_paint_model_from_the_environment(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLXMERT_MODEL", model_dir)
    code, _, err = run(capsys, "paint", "a red circle", "-o", str(tmp_path / "env.png"))
    assert code == 0, err
    assert (tmp_path / "env.png").is_file()


def test_truncation_warning_on_stderr(model_dir, tmp_path, capsys):
    long = " ".join(["a red circle to the left of a blue square"] * 3)
    code, _, err = run(capsys, "paint", long, "-o", str(tmp_path / "long.png"), "--model", model_dir)
    assert code == 0
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("xlxmert: warning: caption 1 is longer")
        and "truncated" in lines[0]
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["paint", "   ", "-o", "x.png"], "empty"),
        (["paint", "a red circle", "-o", "x.png", "--model", "{tmp}/missing"], "model folder not found"),
        (["paint", "a red circle", "-o", "x.png", "--sampler", "tl-br", "--steps", "4"], "exactly 16 steps"),
        (["paint", "a red circle", "-o", "x.png", "--top-k", "3"], "temperature"),
        (["caption", "{tmp}/nope.png"], "image not found"),
        (["caption", "{tmp}/bad.png"], "cannot read image"),
        (["answer", "{scene}", ""], "question 1 is empty"),
    ],
)
def test_one_line_errors(model_dir, scene, tmp_path, capsys, argv, message):
    (tmp_path / "bad.png").write_text("not an image")
    argv = [a.format(tmp=tmp_path, scene=scene) for a in argv]
    if "--model" not in argv:
        argv += ["--model", model_dir]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("xlxmert: error:") and message in err


def test_paint_needs_an_output(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["paint", "a red circle"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_caption_round_trip(model_dir, scene, capsys):
    code, out, err = run(capsys, "caption", scene, "--prefix", "a", "--length", "5", "--model", model_dir)
    assert code == 0, err
    caption = out.strip()
    assert caption.split()[0].startswith("a") and len(out.strip().splitlines()) == 1
    _, again, _ = run(capsys, "caption", scene, "--prefix", "a", "--length", "5", "--model", model_dir)
    assert again == out  # seeded


def test_answer_round_trip(model_dir, scene, capsys):
    code, out, err = run(
        capsys, "answer", scene, "what color is the circle", "--model", model_dir, "--top-k", "2"
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    answer, prob = lines[0].split("\t")
    assert answer in ANSWERS and 0 < float(prob) <= 1
