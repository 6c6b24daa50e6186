"""PaintPipeline: captions → visual words (a sampler) → grid features → generator → images.

X-LXMERT (paper §5.2): the sampler fills the N×N grid with visual-word ids, the vocabulary turns
them into centroid features ``[B, D, N, N]`` and the SPADE generator paints them.

LXMERT+Grid (paper §4, the probe that shows why LXMERT cannot paint): a regression model has no
ids, so the same schedules write its regressed *features* into the masked cells and the same
generator turns those features into an image.

Text once, not K times: LXMERT's language layers never see the visual stream, so each caption is
encoded once (``encode_text``) and that encoding is reused at every sampling step
(``use_text_cache=False`` recomputes it each step, for the benchmark and the equality test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from xlxmert.data.images import tensor_to_pil
from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.errors import XLXMERTError
from xlxmert.models.generator import SpadeGenerator
from xlxmert.models.transformer import XLxmertForPreTraining
from xlxmert.pipelines.common import load_core_components, tokenize_texts
from xlxmert.sampling.visual import SamplerConfig, VisualSampler
from xlxmert.utils.hub import resolve_model_folder
from xlxmert.utils.model_folder import load_component, update_model_index
from xlxmert.utils.seeding import item_generators, torch_generator
from xlxmert.visual.vocabulary import VisualVocabulary


@dataclass
class PaintOutput:
    """``images``: one PIL image per caption. ``ids``: LongTensor[B, M] visual words (None for
    LXMERT+Grid, which paints ``features``: FloatTensor[B, M, D]). ``intermediates``: per caption,
    one PIL image per sampling step (None unless asked for; the paper's Fig. 4 strip)."""

    images: list[Image.Image]
    ids: torch.Tensor | None
    features: torch.Tensor
    intermediates: list[list[Image.Image]] | None = None


class PaintPipeline:
    """Text-to-image with X-LXMERT (or the LXMERT+Grid probe).

    Components: ``tokenizer`` (TextTokenizer), ``transformer`` (XLxmertForPreTraining),
    ``vocabulary`` (``lookup(ids [..]) -> [.., D]``; unused by LXMERT+Grid), ``generator``
    (SpadeGenerator) and ``sampler`` (:class:`SamplerConfig`, the settings used where a call names
    none; default the paper's Mask-Predict-4 argmax).
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        transformer: XLxmertForPreTraining,
        vocabulary: VisualVocabulary,
        generator: SpadeGenerator,
        sampler: SamplerConfig | None = None,
    ) -> None:
        self.sampler = sampler or SamplerConfig()
        self.tokenizer = tokenizer
        self.transformer = transformer.eval()
        self.vocabulary = vocabulary
        self.generator = generator.eval()
        cfg = transformer.config
        gcfg = generator.config
        if (gcfg.input_dim, gcfg.grid_size) != (cfg.feature_dim, cfg.grid_size):
            raise XLXMERTError(
                f"generator reads {gcfg.grid_size}x{gcfg.grid_size}x{gcfg.input_dim} features but the "
                f"transformer paints {cfg.grid_size}x{cfg.grid_size}x{cfg.feature_dim}; "
                "train the generator on this vocabulary"
            )

    @property
    def device(self) -> torch.device:
        """Where the transformer and the generator run."""
        return next(self.transformer.parameters()).device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> PaintPipeline:
        """Move the transformer and the generator to ``device`` and/or cast them to ``dtype`` (e.g.
        ``torch.bfloat16``); returns the pipeline. Samplers draw on the CPU from the same seeded
        generators wherever the models run, so a seed paints the same grid up to the device's
        arithmetic."""
        self.transformer.to(device=device, dtype=dtype)
        self.generator.to(device=device, dtype=dtype)
        return self

    @property
    def paints_features(self) -> bool:
        """True for a regression model (LXMERT+Grid): it writes features, not ids, into the grid."""
        return self.transformer.config.visual_target == "regression"

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> PaintPipeline:
        """Load a model folder (``tokenizer/``, ``transformer/``, ``vocabulary/``, ``generator/``,
        and ``sampler/`` when it has one), or a Hub repository id's snapshot of one."""
        model_dir = resolve_model_folder(model_dir)
        tokenizer, vocabulary, transformer = load_core_components(model_dir)
        generator = load_component(model_dir, "generator", SpadeGenerator)
        has_sampler = (Path(model_dir) / "sampler").is_dir()
        sampler = load_component(model_dir, "sampler", SamplerConfig) if has_sampler else None
        return cls(tokenizer, transformer, vocabulary, generator, sampler)

    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Write each component into its folder of ``model_dir`` and map them in
        ``model_index.json``."""
        model_dir = Path(model_dir)
        components = {
            "sampler": self.sampler,
            "tokenizer": self.tokenizer,
            "vocabulary": self.vocabulary,
            "generator": self.generator,
            "transformer": self.transformer,
        }
        for name, component in components.items():
            component.save_pretrained(model_dir / name)
        update_model_index(model_dir, components)
        return model_dir

    # -- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predictor(
        self,
        captions: Sequence[str],
        guidance_scale: float = 1.0,
        use_text_cache: bool = True,
        allow_empty: bool = False,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The transformer's prediction for ``captions`` (B of them) as the samplers call it:
        ``predict(values, visual_mask: BoolTensor[B, M])`` → ``visual_logits: [B, M, K]`` from
        ``values = visual_ids: LongTensor[B, M]`` (LXMERT+Grid: ``visual_regression: [B, M, D]``
        from ``visual_feats: [B, M, D]``). Call it under ``torch.no_grad()``.

        ``guidance_scale`` s (classifier-free guidance, Ho & Salimans 2022; not in the paper): each
        call also predicts with the empty caption and returns ``uncond + s · (cond − uncond)``; 1
        is plain conditional prediction, s > 1 amplifies what the caption changes.
        ``use_text_cache``: encode the texts once (False: the language layers run at every call)."""
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise XLXMERTError(f"guidance_scale must be >= 0 (1 = no guidance), got {guidance_scale}")
        cfg = self.transformer.config
        tokens = tokenize_texts(self.tokenizer, captions, cfg.max_text_length, allow_empty=allow_empty)
        texts = [tokens]
        if guidance_scale != 1.0:
            empty = [""] * tokens.input_ids.shape[0]
            texts.append(tokenize_texts(self.tokenizer, empty, cfg.max_text_length, allow_empty=True))
        model, device = self.transformer, self.device
        texts = [(t.input_ids.to(device), t.attention_mask.to(device)) for t in texts]
        if use_text_cache:
            encodings = [model.encode_text(ids, attention) for ids, attention in texts]
        key = "visual_feats" if self.paints_features else "visual_ids"

        def predict_one(k: int, visual: dict) -> torch.Tensor:
            if use_text_cache:
                out = model(None, None, text_encoding=encodings[k], **visual)
            else:  # naive: the language layers run again at every step
                out = model(*texts[k], **visual)
            # Back to the samplers' side (CPU, float32), whatever the model's device and dtype.
            return (out.visual_regression if self.paints_features else out.visual_logits).float().cpu()

        def predict(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            visual = {key: values.to(device), "visual_mask": mask.to(device)}
            cond = predict_one(0, visual)
            if len(texts) == 1:
                return cond
            uncond = predict_one(1, visual)
            return uncond + guidance_scale * (cond - uncond)

        return predict

    @torch.no_grad()
    def sample(
        self,
        captions: Sequence[str],
        sampler: VisualSampler,
        seed: int = 0,
        return_intermediates: bool = False,
        use_text_cache: bool = True,
        allow_empty: bool = False,
        guidance_scale: float = 1.0,
        generators: Sequence[torch.Generator] | None = None,
    ):
        """Run ``sampler`` for ``captions``: a ``SamplerOutput`` (ids) or, for LXMERT+Grid, a
        ``FeatureSamplerOutput`` (features). Caption i draws from its own generator, seeded with
        ``seed + i`` (or ``generators[i]``), so its result does not depend on the other captions'
        words, and one caption twice in a batch paints two pictures. ``allow_empty`` admits empty
        captions (the transformer then reads only ``[CLS] [SEP]``). ``guidance_scale``:
        classifier-free guidance, see :meth:`predictor`."""
        predict = self.predictor(captions, guidance_scale, use_text_cache, allow_empty)
        cfg = self.transformer.config
        batch = len(captions)
        gens = list(generators) if generators is not None else item_generators(seed, batch)
        if self.paints_features:
            return sampler.sample_features(
                predict, batch, cfg.num_cells, cfg.feature_dim, gens, return_intermediates
            )
        return sampler.sample(predict, batch, cfg.num_cells, gens, return_intermediates)

    @torch.no_grad()
    def decode(
        self, values: torch.Tensor, seed: int | Sequence[int] = 0, noise: bool | None = None
    ) -> list[Image.Image]:
        """Images from ``ids: LongTensor[B, M]`` or ``features: FloatTensor[B, M, D]``.

        Image b is painted on its own, its generator noise seeded with ``seed + b`` (or ``seed[b]``
        for a sequence), so it does not depend on the rest of the batch; ``noise`` overrides the
        generator config's switch.
        """
        feats = values.float() if values.dim() == 3 else self.vocabulary.lookup(values).float()
        n = self.transformer.config.grid_size
        grid = feats.reshape(feats.shape[0], n, n, feats.shape[-1]).permute(0, 3, 1, 2).contiguous()
        param = next(self.generator.parameters())
        grid = grid.to(device=param.device, dtype=param.dtype)
        seeds = [seed + b for b in range(len(grid))] if isinstance(seed, int) else list(seed)
        images = [
            self.generator(grid[b : b + 1], noise=noise, generator=torch_generator(seeds[b], param.device))
            for b in range(len(grid))
        ]
        return tensor_to_pil(torch.cat(images).float().cpu())

    def resolve_sampler(
        self,
        sampler: str | VisualSampler | None = None,
        steps: int | None = None,
        temperature: float | None = None,
        anneal: bool | None = None,
        top_k: int | None = None,
        guidance_scale: float | None = None,
    ) -> tuple[VisualSampler, float]:
        """The sampler and guidance scale a call with these options runs with (see :meth:`__call__`);
        ``resolve_sampler(...)[0].num_steps(num_cells)`` is how many steps it takes."""
        if sampler is None or isinstance(sampler, str):
            settings = self.sampler.merged(
                sampler,
                steps=steps,
                temperature=temperature,
                anneal=anneal,
                top_k=top_k,
                guidance_scale=guidance_scale,
            )
            return settings.build(), settings.guidance_scale
        return sampler, 1.0 if guidance_scale is None else guidance_scale

    def __call__(
        self,
        captions: Sequence[str] | str,
        sampler: str | VisualSampler | None = None,
        steps: int | None = None,
        seed: int = 0,
        temperature: float | None = None,
        anneal: bool | None = None,
        top_k: int | None = None,
        return_intermediates: bool = False,
        use_text_cache: bool = True,
        noise: bool | None = None,
        allow_empty: bool = False,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> PaintOutput:
        """Paint ``num_images_per_prompt`` images per caption (a caption's images are consecutive).

        ``sampler``: a name (``tl-br``, ``random``, ``easy-first``, ``mask-predict``) or a
        :class:`VisualSampler`; ``steps`` (None: the sampler's default, Mask-Predict-4),
        ``temperature`` (0: argmax, the paper), ``anneal``, ``top_k`` configure a named sampler.
        Arguments left None take the pipeline's :class:`SamplerConfig` (``self.sampler``, from the
        model folder), except that naming another sampler starts from that sampler's defaults.
        ``guidance_scale``: classifier-free guidance (1 = none; see :meth:`sample`); None takes the
        :class:`SamplerConfig`'s, or 1 with a :class:`VisualSampler` instance.
        ``return_intermediates``: also decode the grid after every step into an image.
        Randomness: image i draws from a generator seeded with ``seed + i``; ``generator`` (one
        ``torch.Generator``, shared in order, or one per image) replaces the seeds.
        Raises :class:`XLXMERTError` for an empty caption (unless ``allow_empty``, for the
        evaluation's empty-caption control); warns when a caption is truncated.
        """
        if isinstance(captions, str):
            captions = [captions]
        if num_images_per_prompt < 1:
            raise XLXMERTError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
        captions = [caption for caption in captions for _ in range(num_images_per_prompt)]
        gens = None
        if generator is not None:
            gens = [generator] * len(captions) if isinstance(generator, torch.Generator) else list(generator)
            if len(gens) != len(captions):
                raise XLXMERTError(f"{len(gens)} generators for {len(captions)} images; give one per image")
        sampler, guidance_scale = self.resolve_sampler(
            sampler, steps, temperature, anneal, top_k, guidance_scale
        )
        out = self.sample(
            captions, sampler, seed, return_intermediates, use_text_cache, allow_empty, guidance_scale, gens
        )
        # The generator's noise: seed + i, or a seed drawn from image i's generator after sampling.
        noise_seeds = seed if gens is None else [int(torch.randint(2**62, (1,), generator=g)) for g in gens]
        values = out.features if self.paints_features else out.ids
        images = self.decode(values, noise_seeds, noise)
        strips = None
        if return_intermediates:
            per_step = [self.decode(step_values, noise_seeds, noise) for step_values in out.intermediates]
            strips = [[step_images[b] for step_images in per_step] for b in range(len(images))]
        return PaintOutput(
            images=images,
            ids=None if self.paints_features else out.ids,
            features=out.features if self.paints_features else self.vocabulary.lookup(out.ids).float(),
            intermediates=strips,
        )

    @torch.no_grad()
    def paint_steps(
        self,
        caption: str,
        sampler: str | VisualSampler | None = None,
        steps: int | None = None,
        seed: int = 0,
        temperature: float | None = None,
        anneal: bool | None = None,
        top_k: int | None = None,
        noise: bool | None = None,
        guidance_scale: float | None = None,
    ) -> Iterator[Image.Image]:
        """The picture forming for one caption (paper Fig. 4), one image per sampling step, as
        ``__call__(..., return_intermediates=True).intermediates[0]`` but decoded one step at a time:
        the sampler runs before the first image, then each step is painted only when it is asked
        for, so a consumer can show each one before the next is painted (or stop early). The last
        image is the painting ``__call__`` returns. Options as in :meth:`__call__`."""
        sampler, guidance_scale = self.resolve_sampler(
            sampler, steps, temperature, anneal, top_k, guidance_scale
        )
        out = self.sample([caption], sampler, seed, True, guidance_scale=guidance_scale)
        for step_values in out.intermediates:
            yield self.decode(step_values, seed, noise)[0]
