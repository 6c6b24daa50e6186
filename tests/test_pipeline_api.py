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
