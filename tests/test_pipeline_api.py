"""PaintPipeline as a diffusers user expects it: per-item seeds, ``generator=``,
``num_images_per_prompt``, ``.to(device, dtype)``."""

import pytest
import torch

from conftest import build_tiny_model
from xlxmert.errors import XLXMERTError
from xlxmert.pipelines import PaintPipeline


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.set_num_threads(1)
    return PaintPipeline.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("m") / "m"))


def pixels(image):
    return image.tobytes()


def paint(pipe, captions, **kwargs):
    return pipe(captions, sampler="random", steps=4, temperature=1.0, **kwargs)


def test_one_caption_twice_in_a_batch_paints_two_pictures(pipe):
    out = paint(pipe, ["a red circle", "a red circle"], seed=3)
    assert not torch.equal(out.ids[0], out.ids[1])
    # Item i is seeded with seed + i: the second equals the same caption painted alone with seed 4,
    # and the first does not depend on what follows it.
    assert torch.equal(out.ids[1], paint(pipe, ["a red circle"], seed=4).ids[0])
    assert pixels(out.images[0]) == pixels(paint(pipe, ["a red circle", "two green stars"], seed=3).images[0])


def test_num_images_per_prompt(pipe):
    out = paint(pipe, ["a red circle", "two green stars"], seed=0, num_images_per_prompt=3)
    assert len(out.images) == 6 and out.ids.shape[0] == 6
    assert torch.equal(out.ids[3], paint(pipe, ["two green stars"], seed=3).ids[0])
    assert len({tuple(row.tolist()) for row in out.ids[:3]}) == 3
    with pytest.raises(XLXMERTError, match="num_images_per_prompt"):
        paint(pipe, ["a red circle"], num_images_per_prompt=0)


def test_generators_replace_the_seed(pipe):
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    first = paint(pipe, ["a red circle", "a red circle"], generator=gens(7, 8))
    again = paint(pipe, ["a red circle", "a red circle"], generator=gens(7, 8))
    assert torch.equal(first.ids, again.ids)
    assert [pixels(i) for i in first.images] == [pixels(i) for i in again.images]
    assert not torch.equal(first.ids[0], first.ids[1])
    swapped = paint(pipe, ["a red circle", "a red circle"], generator=gens(8, 7))
    assert torch.equal(swapped.ids[0], first.ids[1])
    one = paint(pipe, ["a red circle", "a red circle"], generator=torch.Generator().manual_seed(7))
    assert not torch.equal(one.ids[0], one.ids[1])  # one generator, drawn from in turn
    with pytest.raises(XLXMERTError, match="one per image"):
        paint(pipe, ["a red circle", "two green stars"], generator=gens(1))


def test_to_dtype_and_device(pipe, tmp_path):
    same = PaintPipeline.from_pretrained(build_tiny_model(tmp_path / "m"))
    assert same.to("cpu") is same and same.device == torch.device("cpu")
    assert pixels(paint(same, ["a red circle"], seed=1).images[0]) == pixels(
        paint(pipe, ["a red circle"], seed=1).images[0]
    )
    same.to(dtype=torch.bfloat16)
    assert next(same.transformer.parameters()).dtype == torch.bfloat16
    assert next(same.generator.parameters()).dtype == torch.bfloat16
    out = paint(same, ["a red circle", "two green stars"], seed=1)
    assert len(out.images) == 2 and out.images[0].size == (16, 16) and out.images[0].mode == "RGB"
    # bf16 predicts nearly the float32 logits.
    full = pipe.predictor(["a red circle"])
    half = same.predictor(["a red circle"])
    ids = torch.zeros(1, 16, dtype=torch.long)
    mask = torch.ones(1, 16, dtype=torch.bool)
    a, b = full(ids, mask), half(ids, mask)
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=0.1)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "no CUDA GPU is available here"),
        ("nonsense", "is not a device"),
        ("meta", "only cpu and cuda"),
    ],
)
def test_paint_device_errors_are_one_line(tmp_path, capsys, device, message):
    from xlxmert.cli import main

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "x.png"
    code = main(
        [
            "paint",
            "a red circle",
            "--model",
            str(build_tiny_model(tmp_path / "m")),
            "-o",
            str(out),
            "--device",
            device,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and "\n" not in err and not out.exists()


def test_paint_on_the_cpu_device_is_the_default(tmp_path, capsys):
    from xlxmert.cli import main

    model = str(build_tiny_model(tmp_path / "m"))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["paint", "a red circle", "--model", model, "-o", str(a)]) == 0
    assert main(["paint", "a red circle", "--model", model, "-o", str(b), "--device", "cpu"]) == 0
    assert a.read_bytes() == b.read_bytes()


# -- the image-text pipelines: .to(device, dtype), --device -----------------------------------------
def scene_images():
    from PIL import Image

    return [Image.new("RGB", (16, 16), (200, 30, 30)), Image.new("RGB", (16, 16), (30, 30, 200))]


def test_image_text_pipelines_move_and_cast_their_modules(tmp_path):
    from xlxmert.models.heads import build_head, save_task_head
    from xlxmert.pipelines import AnswerPipeline, CaptionPipeline, NLVR2Pipeline

    folder = build_tiny_model(tmp_path / "m")
    captioner = CaptionPipeline.from_pretrained(folder)
    before = captioner(scene_images(), prefix="a", seed=0)
    assert captioner.to("cpu", torch.float32) is captioner and captioner.device == torch.device("cpu")
    after = captioner(scene_images(), prefix="a", seed=0)
    assert after.captions == before.captions and after.scores == before.scores
    captioner.to(dtype=torch.bfloat16)
    assert next(captioner.transformer.parameters()).dtype == torch.bfloat16
    assert next(captioner.image_encoder.extractor.parameters()).dtype == torch.bfloat16
    half = captioner(scene_images(), prefix="a", seed=0)
    assert len(half.captions) == 2 and all(c.startswith("a") for c in half.captions)

    answerer = AnswerPipeline.from_pretrained(folder)
    full = answerer(scene_images(), ["what color is it", "what shape is it"])
    answerer.to(dtype=torch.bfloat16)
    bf16 = answerer(scene_images(), ["what color is it", "what shape is it"])
    assert torch.allclose(torch.tensor(bf16.probabilities), torch.tensor(full.probabilities), atol=0.05)

    transformer = answerer.transformer.float()
    torch.manual_seed(0)
    save_task_head(folder, build_head("nlvr2", transformer.config.hidden_size), transformer)
    judge = NLVR2Pipeline.from_pretrained(folder)
    left, right = scene_images()
    full = judge([left], [right], ["the left image is red"])
    assert judge.to(dtype=torch.bfloat16) is judge
    assert next(judge.head.parameters()).dtype == torch.bfloat16
    assert next(judge.model.transformer.parameters()).dtype == torch.bfloat16
    assert judge([left], [right], ["the left image is red"]).probabilities[0] == pytest.approx(
        full.probabilities[0], abs=0.05
    )


def test_device_on_caption_and_answer_reaches_the_pipeline(tmp_path, capsys, monkeypatch):
    from xlxmert.cli import main
    from xlxmert.pipelines.common import ImageTextPipeline

    model = str(build_tiny_model(tmp_path / "m"))
    image = tmp_path / "red.png"
    scene_images()[0].save(image)
    assert main(["caption", str(image), "--model", model]) == 0
    default = capsys.readouterr().out
    moved = []
    original = ImageTextPipeline.to

    def recording_to(self, device=None, dtype=None):
        moved.append((type(self).__name__, device))
        return original(self, device, dtype)

    monkeypatch.setattr(ImageTextPipeline, "to", recording_to)
    assert main(["caption", str(image), "--model", model, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == default
    assert main(["answer", str(image), "what color is it", "--model", model, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()
    cpu = torch.device("cpu")
    assert moved == [("CaptionPipeline", cpu), ("AnswerPipeline", cpu)]
    # evaluate hands the device to the evaluation's config (its pipelines are moved there).
    import xlxmert.evaluation.report as report

    seen = []

    def fake_evaluate(models, data, evaluation_dir, out, config, progress):
        seen.append(config.device)
        out.mkdir(parents=True)
        (out / "table.md").write_text("table\n")

    monkeypatch.setattr(report, "evaluate", fake_evaluate)
    args = ["evaluate", "--model", model, "--data", str(tmp_path), "--out", str(tmp_path / "ev")]
    assert main([*args, "--device", "cpu"]) == 0 and seen == ["cpu"]


@pytest.mark.parametrize("command", ["caption", "answer", "evaluate"])
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "no CUDA GPU is available here"),
        ("nonsense", "is not a device"),
        ("meta", "only cpu and cuda"),
    ],
)
def test_a_bad_device_is_a_one_line_error(tmp_path, capsys, command, device, message):
    from xlxmert.cli import main

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    image = tmp_path / "red.png"
    scene_images()[0].save(image)
    args = {
        "caption": ["caption", str(image)],
        "answer": ["answer", str(image), "what color is it"],
        "evaluate": ["evaluate", "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "out")],
    }[command]
    code = main([*args, "--model", str(tmp_path / "no-model"), "--device", device])
    captured = capsys.readouterr()
    err = captured.err.strip()
    # The device is checked before the model loads (the model folder given does not exist).
    assert code == 1 and message in err and "\n" not in err and not captured.out
    assert not (tmp_path / "out").exists()
