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
from xlxmert.utils.model_folder import load_component, read_model_index, update_model_index
from xlxmert.visual.grid import GridFeatureExtractor
from xlxmert.visual.vocabulary import VisualVocabulary

ImageInput = Image.Image | str | Path


def load_core_components(
    model_dir: str | Path,
) -> tuple[TextTokenizer, VisualVocabulary, GridEmbeddingModel]:
    """The ``tokenizer/``, ``vocabulary/`` and ``transformer/`` components of a model folder, each
    loaded once as the class ``model_index.json`` maps it to, the transformer (eval mode) wired with
    the vocabulary's centroids.

    Raises :class:`XLXMERTError` when the folder, its index or a component is missing or unknown.
    """
    read_model_index(model_dir)  # one clear error for a missing folder or a non-model folder
    tokenizer = load_component(model_dir, "tokenizer", TextTokenizer)
    vocabulary = load_component(model_dir, "vocabulary", VisualVocabulary)
    transformer = load_transformer(model_dir, vocabulary).eval()
    return tokenizer, vocabulary, transformer


def model_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters live (the CPU for a module without any)."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


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
    The backbone runs where it was moved (:meth:`ImageTextPipeline.to`); the words are assigned
    on the CPU.
    """

    def __init__(self, extractor: GridFeatureExtractor, vocabulary: VisualVocabulary) -> None:
        self.extractor = extractor
        self.vocabulary = vocabulary

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, grid_size: int, vocabulary: VisualVocabulary | None = None
    ) -> ImageEncoder:
        """The ``backbone/`` component pooling ``grid_size``² cells, and ``vocabulary`` (default:
        the folder's ``vocabulary/``), as ``model_index.json`` maps them."""
        extractor = load_component(model_dir, "backbone", GridFeatureExtractor, grid_size=grid_size)
        if vocabulary is None:
            vocabulary = load_component(model_dir, "vocabulary", VisualVocabulary)
        return cls(extractor, vocabulary)

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageInput] | ImageInput) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features: FloatTensor[B, M, D], ids: LongTensor[B, M])`` on the CPU, cells row-major."""
        pixels = images_to_tensor(images, self.extractor.image_size)
        param = next(self.extractor.parameters(), None)
        if param is not None:
            pixels = pixels.to(device=param.device, dtype=param.dtype)
        grid = self.extractor(pixels)  # [B, N, N, D]
        feats = grid.reshape(grid.shape[0], -1, grid.shape[-1]).float().cpu()
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
    """Base of the pipelines that read images and text (captioning, question answering, NLVR2).

    Components: the tokenizer, the transformer and the image encoder (backbone + vocabulary), all
    from one model folder, and a fine-tuned task ``head`` in the pipelines that use one.
    """

    head: torch.nn.Module | None = None

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
        tokenizer, vocabulary, transformer = load_core_components(model_dir)
        encoder = ImageEncoder.from_pretrained(model_dir, transformer.config.grid_size, vocabulary)
        return cls(tokenizer, transformer, encoder)

    @property
    def device(self) -> torch.device:
        """Where the transformer runs (inputs are built there)."""
        return model_device(self.transformer)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """Move the transformer, the backbone and the task head (if any) to ``device`` and/or cast
        them to ``dtype`` (e.g. ``torch.bfloat16``); returns the pipeline. Tokens and visual inputs
        are built on the transformer's device; outputs come back to the CPU as float32."""
        for module in (self.transformer, self.image_encoder.extractor, self.head):
            if module is not None:
                module.to(device=device, dtype=dtype)
        return self

    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Write the components into ``model_dir`` and map them in ``model_index.json``."""
        model_dir = Path(model_dir)
        self.tokenizer.save_pretrained(model_dir / "tokenizer")
        self.image_encoder.save_pretrained(model_dir)
        self.transformer.save_pretrained(model_dir / "transformer")
        components = {
            "tokenizer": self.tokenizer,
            "backbone": self.image_encoder.extractor,
            "vocabulary": self.image_encoder.vocabulary,
            "transformer": self.transformer,
        }
        update_model_index(model_dir, components)
        return model_dir
