"""A tiny real model folder (random weights, every real component) for the pipeline and CLI tests."""

from pathlib import Path

import torch

from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.models.generator import GeneratorConfig, SpadeGenerator
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining
from xlxmert.utils.model_folder import COMPONENTS, read_model_index, update_model_index
from xlxmert.visual.backbones import ShapesBackbone, ShapesBackboneConfig
from xlxmert.visual.grid import GridFeatureExtractor
from xlxmert.visual.vocabulary import VisualVocabulary

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


def test_tiny_model_folder_has_every_component(tmp_path):
    folder = build_tiny_model(tmp_path / "m")
    assert sorted(read_model_index(folder)["components"]) == sorted(COMPONENTS)
