"""Helpers shared by the pipelines: loading a model folder's components, captions in, images in."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from xlxmert.data.images import load_image, pil_to_tensor
from xlxmert.data.tokenizer import TextTokenizer, TokenizedText
from xlxmert.errors import XLXMERTError
from xlxmert.models.families import load_transformer
from xlxmert.models.grid_embedding import GridEmbeddingModel
from xlxmert.utils.hub import resolve_model_folder
from xlxmert.utils.model_folder import component_dir, read_model_index, update_model_index
from xlxmert.visual.grid import GridFeatureExtractor
from xlxmert.visual.vocabulary import VisualVocabulary

ImageInput = Image.Image | str | Path


def load_tokenizer_and_transformer(model_dir: str | Path) -> tuple[TextTokenizer, GridEmbeddingModel]:
    """The ``tokenizer/`` and ``transformer/`` components of a model folder (transformer in eval mode,
    of whichever family wrote it).

    Raises :class:`XLXMERTError` when the folder or a component is missing.
    """
    read_model_index(model_dir)  # one clear error for a missing folder or a non-model folder
    tokenizer = TextTokenizer.from_pretrained(component_dir(model_dir, "tokenizer"))
    component_dir(model_dir, "transformer")
    component_dir(model_dir, "vocabulary")  # the transformer's centroids live there
    transformer = load_transformer(model_dir).eval()
    return tokenizer, transformer


def load_vocabulary(model_dir: str | Path) -> VisualVocabulary:
    """The ``vocabulary/`` component of a model folder."""
    return VisualVocabulary.from_pretrained(component_dir(model_dir, "vocabulary"))


def tokenize_texts(
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    max_length: int,
    what: str = "caption",
    allow_empty: bool = False,
) -> TokenizedText:
    """Tokenise ``texts`` for a model reading at most ``max_length`` tokens.

    An empty (or blank) text is an :class:`XLXMERTError` unless ``allow_empty`` (the evaluation's
    empty-caption control); a text longer than the limit is truncated and a ``UserWarning`` says so
    (the CLI prints it on stderr).
    """
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise XLXMERTError(f"no {what}s given")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or (not text.strip() and not allow_empty):
            raise XLXMERTError(f"{what} {i + 1} is empty; give some words")
    tokens = tokenizer(list(texts), max_length=max_length)
    for i, cut in enumerate(tokens.truncated):
        ids = tokens.input_ids[i][tokens.attention_mask[i].bool()].tolist()
        words = [t for t in tokenizer.convert_ids_to_tokens(ids) if t not in ("[CLS]", "[SEP]", "[PAD]")]
        if words and all(t == "[UNK]" for t in words):
            warnings.warn(
                f"{what} {i + 1} has no word the model knows ({texts[i]!r}); it reads as unknown words only",
                UserWarning,
                stacklevel=3,
            )
        if cut:
            kept = " ".join(words).replace(" ##", "")  # unknown words stay visible as [UNK]
            warnings.warn(
                f"{what} {i + 1} is longer than the model's limit of {max_length - 2} word pieces; "
                f"truncated to: {kept!r}",
                UserWarning,
                stacklevel=3,
            )
    return tokens


def images_to_tensor(images: Sequence[ImageInput] | ImageInput, size: int) -> torch.Tensor:
    """``FloatTensor[B, 3, size, size] in [-1, 1]`` from PIL images or image paths (resized)."""
    if isinstance(images, (Image.Image, str, Path)):
        images = [images]
    if not images:
        raise XLXMERTError("no images given")
    tensors = []
    for img in images:
        if not isinstance(img, Image.Image):
            img = load_image(img, size=size)
        elif img.size != (size, size) or img.mode != "RGB":
            img = img.convert("RGB").resize((size, size), Image.BICUBIC)
        tensors.append(pil_to_tensor(img))
    return torch.stack(tensors)


class ImageEncoder:
    """Images → what the transformer reads: the grid features of the model's backbone and, for
    X-LXMERT, their nearest visual words in the model's vocabulary.

    ``vocabulary.assign(features [..., D]) -> LongTensor[...]`` gives the nearest visual words.
    """

    def __init__(self, extractor: GridFeatureExtractor, vocabulary: VisualVocabulary) -> None:
        self.extractor = extractor
        self.vocabulary = vocabulary

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, grid_size: int) -> ImageEncoder:
        extractor = GridFeatureExtractor.from_pretrained(
            component_dir(model_dir, "backbone"), grid_size=grid_size
        )
        return cls(extractor, load_vocabulary(model_dir))

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageInput] | ImageInput) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features: FloatTensor[B, M, D], ids: LongTensor[B, M])``, cells row-major."""
        pixels = images_to_tensor(images, self.extractor.image_size)
        grid = self.extractor(pixels)  # [B, N, N, D]
        feats = grid.reshape(grid.shape[0], -1, grid.shape[-1]).float()
        return feats, self.vocabulary.assign(feats).long()

    def save_pretrained(self, model_dir: str | Path) -> None:
        self.extractor.save_pretrained(Path(model_dir) / "backbone")
        self.vocabulary.save_pretrained(Path(model_dir) / "vocabulary")


def visual_inputs(transformer: GridEmbeddingModel, feats: torch.Tensor, ids: torch.Tensor) -> dict:
    """Keyword arguments for the transformer's visual input: exact features for the +Grid variants,
    visual-word ids for X-LXMERT and X-UNITER."""
    if transformer.config.exact_features:
        return {"visual_feats": feats}
    return {"visual_ids": ids}


class ImageTextPipeline:
    """Base of the pipelines that read images and text (captioning, question answering).

    Components: the tokenizer, the transformer and the image encoder (backbone + vocabulary), all
    from one model folder.
    """

    def __init__(
        self, tokenizer: TextTokenizer, transformer: GridEmbeddingModel, image_encoder: ImageEncoder
    ) -> None:
        self.tokenizer = tokenizer
        self.transformer = transformer.eval()
        self.image_encoder = image_encoder

    @classmethod
    def from_pretrained(cls, model_dir: str | Path):
        """Load ``tokenizer/``, ``transformer/``, ``backbone/`` and ``vocabulary/`` of a model folder
        (or of a Hub repository id's snapshot)."""
        model_dir = resolve_model_folder(model_dir)
        tokenizer, transformer = load_tokenizer_and_transformer(model_dir)
        return cls(
            tokenizer, transformer, ImageEncoder.from_pretrained(model_dir, transformer.config.grid_size)
        )

    def save_pretrained(self, model_dir: str | Path) -> Path:
        model_dir = Path(model_dir)
        self.tokenizer.save_pretrained(model_dir / "tokenizer")
        self.image_encoder.save_pretrained(model_dir)
        self.transformer.save_pretrained(model_dir)
        update_model_index(model_dir)
        return model_dir
