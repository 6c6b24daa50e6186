import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from xlxmert.data.tokenizer import TextTokenizer  # noqa: E402
from xlxmert.evaluation.graders.evaluator import EvaluatorConfig  # noqa: E402
from xlxmert.models.generator import GeneratorConfig, SpadeGenerator  # noqa: E402
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining  # noqa: E402
from xlxmert.utils.model_folder import update_model_index  # noqa: E402
from xlxmert.visual.backbones import ShapesBackbone, ShapesBackboneConfig  # noqa: E402
from xlxmert.visual.grid import GridFeatureExtractor  # noqa: E402
from xlxmert.visual.vocabulary import VisualVocabulary  # noqa: E402

# ---------------------------------------------------------------------- the tiny model (one builder)
# A tiny real model folder (random weights, every real component) for the pipeline, CLI, serving,
# fine-tuning and evaluation tests; test modules build theirs with build_tiny_model (imported from
# here: ``from conftest import build_tiny_model, GRID``).
CAPTIONS = [
    "a red circle to the left of a blue square",
    "two green stars at night",
    "a yellow diamond in the fog",
    "three shapes on the sand",
    "a blue square in the top right corner",
    "an orange star in the snow",
]
ANSWERS = ["red", "blue", "green", "yes", "no"]
GRID, K, D, IMAGE = 4, 16, 12, 16


def build_tiny_model(folder: Path, variant: str = "x-lxmert", seed: int = 0) -> Path:
    """Write a complete model folder: tokenizer, backbone, vocabulary, transformer, generator.

    ``variant``: ``"x-lxmert"`` (CCC over K = 16 visual words) or ``"lxmert-grid"`` (regression).
    Grid 4×4, D = 12, 16-px images; transformer hidden 32 with 1/1/1 layers.
    """
    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = TextTokenizer.train(CAPTIONS, vocab_size=80)
    tokenizer.save_pretrained(folder / "tokenizer")
    backbone = ShapesBackbone(
        ShapesBackboneConfig(image_size=IMAGE, widths=(8, 16), feature_dim=D, train_grid_sizes=(GRID,))
    )
    GridFeatureExtractor(backbone, GRID).save_pretrained(folder / "backbone")
    centroids = torch.randn(K, D)
    VisualVocabulary(centroids).save_pretrained(folder / "vocabulary")
    config = XLxmertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        l_layers=1,
        r_layers=1,
        x_layers=1,
        grid_size=GRID,
        num_clusters=K,
        feature_dim=D,
        num_answers=len(ANSWERS),
        variant=variant,
        visual_target="clusters" if variant == "x-lxmert" else "regression",
    )
    model = XLxmertForPreTraining(config, centroids)
    model.answers = list(ANSWERS)
    model.save_pretrained(folder / "transformer")
    generator = SpadeGenerator(
        GeneratorConfig(
            input_dim=D, grid_size=GRID, output_size=IMAGE, channels=8, bottleneck_dim=8, spade_hidden=8
        )
    )
    generator.save_pretrained(folder / "generator")
    update_model_index(folder, preset="tiny-test")
    return folder


def retokenize(folder: Path, texts: list[str]) -> Path:
    """The tiny model with a tokenizer that knows the data's words (transformer rebuilt to fit)."""
    from xlxmert.utils.config import load_config, save_config
    from xlxmert.visual.vocabulary import VisualVocabulary

    tokenizer = TextTokenizer.train(texts, vocab_size=150)
    tokenizer.save_pretrained(folder / "tokenizer")
    config = load_config(XLxmertConfig, folder / "transformer")
    config = type(config)(**{**config.__dict__, "vocab_size": tokenizer.vocab_size})
    torch.manual_seed(0)
    model = XLxmertForPreTraining(config, VisualVocabulary.from_pretrained(folder / "vocabulary").centroids)
    model.answers = list(ANSWERS)
    model.save_pretrained(folder / "transformer")
    save_config(config, folder / "transformer")
    return folder


class RandomFeatures(nn.Module):
    """A user-supplied feature network with random weights (the Inception-v3 path, tested)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread (as CI's 2-core machine wants; see DEVELOPERS.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A ShapeScenes data root with train (48), val (16), test (16) and compositional (8) at 64 px."""
    from xlxmert.data.shapes.generate import generate_split

    root = tmp_path_factory.mktemp("shapes")
    for split, n in (("train", 48), ("val", 16), ("test", 16), ("compositional", 8)):
        generate_split(root, split, n, size=64, seed=0, progress=False)
    return root


# ---------------------------------------------------------------------- the evaluation's tiny graders
TINY_EVALUATOR = EvaluatorConfig(widths=(16, 24, 32, 48), image_size=32)  # reads 64-px images at 32 px


@pytest.fixture(scope="session")
def eval_shapes(tmp_path_factory):
    """Enough ShapeScenes images for a briefly trained evaluator and matcher to beat chance."""
    from xlxmert.data.shapes.generate import generate_split

    root = tmp_path_factory.mktemp("eval_shapes")
    generate_split(root, "train", 400, size=64, seed=11, progress=False)
    generate_split(root, "test", 100, size=64, seed=12, progress=False)
    return root


@pytest.fixture(scope="session")
def eval_suite_dir(eval_shapes, tmp_path_factory):
    """Evaluator + matcher trained for well under a minute (tiny widths, 32 px, few steps)."""
    from xlxmert.evaluation.graders.evaluator import EvaluatorTrainingConfig
    from xlxmert.evaluation.graders.matcher import MatcherConfig
    from xlxmert.evaluation.graders.matcher_training import MatcherTrainingConfig
    from xlxmert.evaluation.graders.suite import train_suite

    out = tmp_path_factory.mktemp("evaluation")
    train_suite(
        eval_shapes,
        out,
        evaluator_steps=300,
        matcher_steps=300,
        eval_split=None,
        evaluator_config=TINY_EVALUATOR,
        matcher_config=MatcherConfig(dim=48, layers=1, fusion_layers=2, heads=2, cells=8),
        evaluator_training=EvaluatorTrainingConfig(batch_size=32, lr=4e-3),
        matcher_training=MatcherTrainingConfig(batch_size=32, hard_negatives=4, lr=1e-3),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def eval_test_set(eval_shapes):
    """The test split's examples, images ``FloatTensor[100, 3, 64, 64]`` and one caption each."""
    from xlxmert.evaluation.split import (
        choose_captions,
        images_uint8,
        load_example_images,
        load_examples,
        to_float,
    )

    examples = load_examples(eval_shapes, "test")
    images = to_float(images_uint8(load_example_images(examples)))
    return examples, images, choose_captions(examples, seed=0)
