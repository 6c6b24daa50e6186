"""One ShapeScenes split as the evaluation sees it: image file, ground-truth scene, captions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xlxmert.data.images import load_image, pil_to_tensor
from xlxmert.data.shapes.scene import Scene, load_scenes
from xlxmert.errors import XLXMERTError
from xlxmert.utils.seeding import numpy_rng


@dataclass(frozen=True)
class EvalExample:
    """An image of a split with its scene and its (five) captions."""

    image_id: int
    path: Path
    scene: Scene
    captions: tuple[str, ...]


def load_examples(data_root: str | Path, split: str, n: int | None = None) -> list[EvalExample]:
    """The first ``n`` images (all if None) of ``data_root/split`` in the captions file's order."""
    split_dir = Path(data_root) / split
    captions_file = split_dir / f"captions_{split}.json"
    if not captions_file.is_file():
        raise XLXMERTError(
            f"no {captions_file.name} in {split_dir}: write the split first (xlxmert data shapes --out "
            f"{data_root} --split {split})"
        )
    coco = json.loads(captions_file.read_text())
    by_image: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann["caption"])
    scenes = {int(s.id): s for s in load_scenes(split_dir)}
    examples = []
    for info in coco["images"]:
        image_id = int(info["id"])
        if image_id not in scenes:
            raise XLXMERTError(f"image {image_id} of {captions_file} has no scene in scenes_{split}.json")
        examples.append(
            EvalExample(
                image_id, split_dir / info["file_name"], scenes[image_id], tuple(by_image.get(image_id, ()))
            )
        )
        if n is not None and len(examples) >= n:
            break
    if not examples:
        raise XLXMERTError(f"split {split_dir} has no images")
    return examples


def images_uint8(images: list[Image.Image], size: int | None = None) -> torch.Tensor:
    """``ByteTensor[B, 3, S, S]`` from PIL images (compact storage for training sets)."""
    arrays = []
    for img in images:
        img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_example_images(examples: list[EvalExample], size: int | None = None) -> list[Image.Image]:
    """The examples' images as RGB PIL images (resized to ``size`` if given)."""
    return [load_image(ex.path, size) for ex in examples]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``FloatTensor[B, 3, H, W] in [-1, 1]`` from ``ByteTensor[B, 3, H, W]``."""
    return images.float().div(127.5).sub(1.0)


def choose_captions(examples: Sequence[EvalExample], seed: int) -> list[str]:
    """One caption per image, drawn with ``seed`` (the same for every row and model)."""
    rng = numpy_rng(seed)
    out = []
    for ex in examples:
        if not ex.captions:
            raise XLXMERTError(f"image {ex.image_id} has no caption")
        out.append(ex.captions[int(rng.integers(len(ex.captions)))])
    return out


def stack_images(images: Sequence[Image.Image]) -> torch.Tensor:
    return torch.stack([pil_to_tensor(img) for img in images])
