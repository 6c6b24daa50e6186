"""``xlxmert train-all``: a recipe, run in order and resumable stage by stage.

    ShapeScenes data → tokenizer → backbone → grid features → visual vocabulary (+ ids)
    → generator → X-LXMERT pretraining → continued pretraining runs → evaluation suite
    → evaluation → model folder + card

A recipe is a :class:`TrainAllConfig` preset: ``shapes-64`` is the shipped default model
(``models/shapes-64``), continuation runs included; ``tiny`` is the same recipe at sizes that take
seconds (tests, smoke runs). Intermediate outputs live in a work folder (default ``<out>.work``),
one subfolder per stage:

    WORK/data/<split>/   WORK/tokenizer/   WORK/backbone/   WORK/features/<split>/   WORK/vocab/
    WORK/generator/      WORK/transformer/ WORK/transformer-2/ ...   WORK/eval-suite/ WORK/eval/<split>/

A stage with a record in ``WORK/.stages/<folder>.json`` (written when it finished) is skipped; a
stage cut off part-way is rerun, and the stages that checkpoint (feature extraction, generator,
pretraining) resume where they stopped. The final model folder ``out`` gets the five components,
the model card ``README.md`` and ``metrics.json``; its ``model_index.json`` names the recipe and the hash of
its settings (:func:`recipe_hash`), so "this folder = that recipe" is checkable.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import PresetConfig, config_to_dict, same_settings
from xlxmert.utils.model_folder import COMPONENTS, copy_component, update_model_index

STAGE_RECORDS = ".stages"
EVAL_SPLITS = ("test", "compositional")
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainContinuation:
    """A pretraining run that starts from the previous run's transformer (``pretrain --init``) with
    some settings changed. A field left None keeps the recipe's pretraining setting."""

    steps: int
    lr: float | None = None
    full_mask_prob: float | None = None
    task_ratio: tuple[int, int, int] | None = None
    standardize_ccc_output: bool | None = None


# The shipped model's continuation runs: CCC scored against the standardized centroids, then
# painting's share raised (4 visual-masking batches, half of them fully masked, to each word-masking
# and matching batch), twice.
_SHAPES_64_CONTINUATIONS = (
    PretrainContinuation(1500, standardize_ccc_output=True),
    PretrainContinuation(7000, full_mask_prob=0.5, task_ratio=(4, 1, 1), standardize_ccc_output=True),
    PretrainContinuation(4000, full_mask_prob=0.5, task_ratio=(4, 1, 1), standardize_ccc_output=True),
)


@dataclass(frozen=True)
class TrainAllConfig(PresetConfig):
    """Every stage's settings: a recipe. The defaults are the ``shapes-64`` recipe, the shipped
    default model; ``PRESETS["tiny"]`` is the same recipe at sizes that take seconds per stage."""

    preset: str = field(default="shapes-64", metadata={"help": "the recipe's name"})
    image_size: int = field(default=64, metadata={"help": "image side in pixels"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    num_train: int = field(default=20000, metadata={"help": "training scenes"})
    num_eval: int = field(default=1000, metadata={"help": "scenes of each of val, test, compositional"})
    data_workers: int = field(default=1, metadata={"help": "processes rendering scenes"})
    tokenizer_vocab_size: int = field(default=1000, metadata={"help": "WordPiece vocabulary size"})
    backbone_steps: int = field(default=1500, metadata={"help": "backbone training steps"})
    backbone_output: str = field(
        default="predictions",
        metadata={
            "help": "grid features: the backbone's per-cell predictions (place probabilities + "
            "colour×shape coverages, 40-d) or its feature map",
            "choices": ("features", "predictions"),
        },
    )
    grid_size: int | None = field(
        default=8,
        metadata={
            "help": "cells per side of the visual grid (none: the vocabulary preset's; "
            "the paper's COCO grid is 8)"
        },
    )
    vocab_clusters: int | None = field(
        default=256, metadata={"help": "K visual words (none: the vocabulary preset's)"}
    )
    vocab_sample_size: int | None = field(
        default=None, metadata={"help": "grid vectors k-means trains on (none: the vocabulary preset's)"}
    )
    generator_steps: int = field(default=2800, metadata={"help": "generator training steps"})
    generator_batch_size: int | None = field(
        default=16, metadata={"help": "generator batch size (none: the trainer's default)"}
    )
    generator_bf16: bool = field(default=True, metadata={"help": "generator training in bfloat16 autocast"})
    pretrain_steps: int = field(
        default=6000, metadata={"help": "the first pretraining run's steps (continuations set their own)"}
    )
    pretrain_batch_size: int | None = field(
        default=128, metadata={"help": "pretraining batch size (none: the pretraining preset's)"}
    )
    pretrain_lr: float | None = field(
        default=5e-4, metadata={"help": "pretraining learning rate (none: the pretraining preset's)"}
    )
    standardize_features: bool = field(
        default=True,
        metadata={"help": "standardize the transformer's visual features by the centroids' statistics"},
    )
    standardize_ccc_output: bool = field(
        default=False,
        metadata={
            "help": "CCC's output weights are the standardized centroids (the first "
            "pretraining run's; continuations set their own)"
        },
    )
    caption_dropout: float = field(
        default=0.1, metadata={"help": "pretraining: empty-caption share (for classifier-free guidance)"}
    )
    full_mask_prob: float = field(default=0.3, metadata={"help": "pretraining: share of fully masked images"})
    ccc_class_balance: float = field(
        default=0.0, metadata={"help": "pretraining: CCC weight (frequency)^-BETA"}
    )
    task_ratio: tuple[int, int, int] = field(
        default=(1, 1, 1),
        metadata={
            "help": "pretraining: visual-masking, word-masking and matching batches per cycle",
            "metavar": "V,T,M",
        },
    )
    position_frequencies: int = field(
        default=0, metadata={"help": "transformer: Fourier octaves of positions"}
    )
    architecture: str = field(
        default="lxmert",
        metadata={
            "help": "transformer family: LXMERT's two streams or UNITER's single stream",
            "choices": ("lxmert", "uniter"),
        },
    )
    mixed_precision: str = field(
        default="bf16", metadata={"help": "pretraining autocast", "choices": ("no", "bf16", "fp16")}
    )
    # Pretraining runs after the first, each from the previous one's weights.
    continuations: tuple[PretrainContinuation, ...] = _SHAPES_64_CONTINUATIONS
    # How the model paints: evaluated with these settings and saved as the model's sampler/ (the
    # CLI's and PaintPipeline's default for it).
    evaluator_steps: int = field(default=1000, metadata={"help": "evaluator (grader) training steps"})
    matcher_steps: int = field(default=600, metadata={"help": "image-text matcher training steps"})
    eval_n: int = field(default=300, metadata={"help": "images per evaluated split"})
    eval_sampler: str = field(
        default="random",
        metadata={
            "help": "sampler of the evaluation, saved as the model's sampler/ default",
            "choices": ("mask-predict", "tl-br", "random", "easy-first"),
        },
    )
    eval_steps: int | None = field(default=16, metadata={"help": "its steps (none: the sampler's default)"})
    eval_temperature: float = field(default=1.0, metadata={"help": "its sampling temperature"})
    eval_anneal: bool = field(default=False, metadata={"help": "anneal that temperature to 0"})
    eval_guidance_scale: float = field(
        default=3.0, metadata={"help": "its classifier-free guidance (1: none)"}
    )

    PRESET_KIND: ClassVar[str] = "train-all"
    PRESET_FIELD: ClassVar[str] = "preset"  # the config records the recipe's name
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "shapes-64": {},
        "tiny": {
            "num_train": 64,
            "num_eval": 16,
            "tokenizer_vocab_size": 200,
            "backbone_steps": 20,
            "vocab_clusters": 64,
            "vocab_sample_size": 20000,
            "generator_steps": 4,
            "generator_batch_size": 4,
            "pretrain_steps": 6,
            "pretrain_batch_size": 8,
            "continuations": (
                PretrainContinuation(2, standardize_ccc_output=True),
                PretrainContinuation(
                    2, full_mask_prob=0.5, task_ratio=(4, 1, 1), standardize_ccc_output=True
                ),
            ),
            "evaluator_steps": 40,
            "matcher_steps": 40,
            "eval_n": 8,
        },
    }

    def __post_init__(self) -> None:
        n = self.grid_size
        if n is not None and (n < 1 or n >= self.image_size or self.image_size % n):
            raise XLXMERTError(
                f"grid size must divide the image size {self.image_size} and be smaller, got {n}"
            )

    def command(self, out: str | Path) -> str:
        """The ``xlxmert train-all`` command line that reproduces this config."""
        preset = TrainAllConfig.from_preset(self.preset)
        parts = [f"xlxmert train-all --preset {self.preset} --out {Path(out).as_posix()}"]
        for name, flag in CLI_FLAGS.items():
            value = getattr(self, name)
            if value != getattr(preset, name):
                if isinstance(value, bool):
                    parts.append(flag if value else f"--no-{flag[2:]}")
                    continue
                if isinstance(value, (tuple, list)):
                    value = ",".join(map(str, value))
                parts.append(f"{flag} {value}")
        return " ".join(parts)

    @property
    def sampler(self) -> Any:
        """The evaluation's :class:`~xlxmert.sampling.visual.SamplerConfig` (also the model's
        ``sampler/``)."""
        from xlxmert.sampling.visual import SamplerConfig

        return SamplerConfig(
            self.eval_sampler,
            self.eval_steps,
            temperature=self.eval_temperature,
            anneal=self.eval_anneal,
            guidance_scale=self.eval_guidance_scale,
        )

    @property
    def stage_preset(self) -> str:
        """The preset of the stage configs (model sizes): ``tiny`` runs use ``shapes-64`` sizes."""
        return "shapes-64" if self.preset == "tiny" else self.preset


# Config fields that ``xlxmert train-all`` exposes as flags (generated from the fields by
# xlxmert.cli.options; kept here so a model card can print the exact command).
CLI_FLAGS = {
    f.name: "--" + f.name.replace("_", "-")
    for f in dataclasses.fields(TrainAllConfig)
    if f.name not in ("preset", "continuations")
}


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str
    run: Callable[[Path, TrainAllConfig, bool], dict[str, Any]]


def _data(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.data.shapes.generate import generate_split

    sizes = {"train": cfg.num_train, "val": cfg.num_eval, "test": cfg.num_eval, "compositional": cfg.num_eval}
    for split, n in sizes.items():
        generate_split(work / "data", split, n, cfg.image_size, cfg.seed, cfg.data_workers, progress)
    return {"scenes": sizes}


def _tokenizer(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.data.tokenizer import TextTokenizer, texts_from_split

    tok = TextTokenizer.train(texts_from_split(work / "data" / "train"), vocab_size=cfg.tokenizer_vocab_size)
    tok.save_pretrained(work / "tokenizer")
    return {"vocab_size": tok.vocab_size}


def _backbone(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.training.backbone import train_backbone
    from xlxmert.visual.backbones import ShapesBackboneConfig

    config = ShapesBackboneConfig.from_preset(cfg.stage_preset)
    return train_backbone(
        work / "data", config, work / "backbone", steps=cfg.backbone_steps, seed=cfg.seed, progress=progress
    )


def _features(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.visual.grid import GridFeatureExtractor
    from xlxmert.visual.store import extract_features
    from xlxmert.visual.vocabulary import VocabularyConfig

    grid = cfg.grid_size or VocabularyConfig.from_preset(cfg.stage_preset).grid_size
    extractor = GridFeatureExtractor.from_pretrained(work / "backbone", grid_size=grid)
    extractor.backbone = extractor.backbone.with_output(cfg.backbone_output)
    counts = {}
    for split in ("train", "val", *EVAL_SPLITS):
        store = extract_features(
            work / "data", split, extractor, work / "features" / split, progress=progress
        )
        counts[split] = len(store)
    return {"grid_size": grid, "images": counts}


def _vocab(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.visual.store import FeatureStore
    from xlxmert.visual.vocabulary import VocabularyConfig, assign_store, build_vocabulary

    overrides = {"seed": cfg.seed}
    if cfg.vocab_sample_size is not None:
        overrides["sample_size"] = cfg.vocab_sample_size
    if cfg.vocab_clusters is not None:
        overrides["num_clusters"] = cfg.vocab_clusters
    train = FeatureStore.open(work / "features" / "train")
    config = VocabularyConfig.from_preset(
        cfg.stage_preset, dim=train.dim, grid_size=train.grid_size, **overrides
    )
    vocab, report = build_vocabulary(train, config, work / "vocab", progress=progress)
    for split in ("train", "val", *EVAL_SPLITS):
        assign_store(FeatureStore.open(work / "features" / split), vocab, work / "vocab", progress=progress)
    return {key: report[key] for key in report if not isinstance(report[key], list)}


def _generator(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.training.generator import GeneratorTrainConfig, train_generator

    overrides: dict[str, Any] = {
        "steps": cfg.generator_steps,
        "seed": cfg.seed,
        "output_size": cfg.image_size,
    }
    if cfg.generator_batch_size is not None:
        overrides["batch_size"] = cfg.generator_batch_size
    config = GeneratorTrainConfig(preset=cfg.stage_preset, **overrides)
    result = train_generator(work / "data", work / "vocab", work / "generator", config, progress=progress)
    return {"images_per_second": result.images_per_second, "reconstruction": result.quality or {}}


def _pretraining_folder(run: int) -> str:
    """Work subfolder of pretraining run ``run`` (1 = the first, 2.. = continuations)."""
    return "transformer" if run == 1 else f"transformer-{run}"


def _pretraining(run: int, work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    """Pretraining run ``run``: the recipe's settings, or continuation ``run - 1`` of them started
    from run ``run - 1``'s transformer."""
    from xlxmert.models.families import transformer_config
    from xlxmert.training.pretrain import PretrainConfig, pretrain

    continuation = cfg.continuations[run - 2] if run > 1 else PretrainContinuation(cfg.pretrain_steps)

    def setting(name: str, recipe_value: Any) -> Any:
        value = getattr(continuation, name)
        return recipe_value if value is None else value

    overrides: dict[str, Any] = {
        "steps": continuation.steps,
        "seed": cfg.seed,
        "mixed_precision": cfg.mixed_precision,
        "caption_dropout": cfg.caption_dropout,
        "full_mask_prob": setting("full_mask_prob", cfg.full_mask_prob),
        "ccc_class_balance": cfg.ccc_class_balance,
        "task_ratio": tuple(setting("task_ratio", cfg.task_ratio)),
    }
    if cfg.pretrain_batch_size is not None:
        overrides["batch_size"] = cfg.pretrain_batch_size
    lr = setting("lr", cfg.pretrain_lr)
    if lr is not None:
        overrides["lr"] = lr
    model = pretrain(
        work / "data",
        work / "vocab",
        work / "tokenizer",
        work / _pretraining_folder(run),
        transformer_config(
            cfg.architecture,
            cfg.stage_preset,
            standardize_features=cfg.standardize_features,
            standardize_ccc_output=setting("standardize_ccc_output", cfg.standardize_ccc_output),
            position_frequencies=cfg.position_frequencies,
        ),
        PretrainConfig.from_preset(cfg.stage_preset, **overrides),
        progress=progress,
        init_from=work / _pretraining_folder(run - 1) if run > 1 else None,
    )
    return {"parameters": model.num_parameters(), "steps": continuation.steps}


def _assemble(work: Path, out: Path, cfg: TrainAllConfig) -> None:
    """Copy the five components into ``out`` (a model folder) and write its sampler settings."""
    sources = {
        "tokenizer": work / "tokenizer",
        # The backbone as the features were extracted with it (its output setting included).
        "backbone": work / "transformer" / "backbone",
        "vocabulary": work / "transformer" / "vocabulary",
        "transformer": work / _pretraining_folder(1 + len(cfg.continuations)) / "transformer",
        "generator": work / "generator" / "generator",
    }
    for name in COMPONENTS:
        copy_component(sources[name], out, name)
    # The vocabulary's per-split id arrays are training data, not part of the model.
    shutil.rmtree(out / "vocabulary" / "ids", ignore_errors=True)
    shutil.rmtree(out / "vocabulary" / "backbone", ignore_errors=True)
    cfg.sampler.save_pretrained(out / "sampler")
    update_model_index(out, {"sampler": cfg.sampler})


def _eval_suite(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.evaluation.graders.suite import train_suite

    return train_suite(
        work / "data",
        work / "eval-suite",
        evaluator_steps=cfg.evaluator_steps,
        matcher_steps=cfg.matcher_steps,
        progress=progress,
    )


def _evaluation(work: Path, out: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.evaluation.report import EvaluationConfig, evaluate

    results = {}
    s = cfg.sampler
    sampling = {k: getattr(s, k) for k in ("steps", "temperature", "anneal", "guidance_scale")}
    sampling["sampler"] = s.name
    for split in EVAL_SPLITS:
        config = EvaluationConfig(split=split, n=cfg.eval_n, seed=cfg.seed, **sampling)
        results[split] = evaluate(
            [out], work / "data", work / "eval-suite", work / "eval" / split, config, progress
        )
    return results


def recipe_stages(config: TrainAllConfig) -> tuple[Stage, ...]:
    """The recipe's stages in order: one pretraining stage per run, continuations included."""
    runs = range(2, 2 + len(config.continuations))
    return (
        Stage("data", "data", _data),
        Stage("tokenizer", "tokenizer", _tokenizer),
        Stage("backbone", "backbone", _backbone),
        Stage("features", "features", _features),
        Stage("vocabulary", "vocab", _vocab),
        Stage("generator", "generator", _generator),
        Stage("pretraining", "transformer", functools.partial(_pretraining, 1)),
        *(
            Stage(f"pretraining-{run}", _pretraining_folder(run), functools.partial(_pretraining, run))
            for run in runs
        ),
        Stage("evaluation suite", "eval-suite", _eval_suite),
    )


# Settings that do not change what the recipe builds.
_NOT_HASHED = ("preset", "data_workers")


def recipe_hash(config: TrainAllConfig) -> str:
    """12 hex digits naming the recipe's settings (all but its name and how many processes render)."""
    settings = {k: v for k, v in config_to_dict(config).items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def visual_sizes(preset: str) -> dict[str, int]:
    """The visual sizes of the model ``preset`` builds, which the data decide (the transformer's and
    the generator's own presets are overridden by the vocabulary at train time): ``grid_size`` N,
    ``num_clusters`` K and ``feature_dim`` D. A train-all recipe's (``shapes-64``: the shipped
    model's 8×8 grid of K = 256 words of the backbone's 40-d cell predictions), else the vocabulary
    preset's (``paper``: 8×8, K = 10000, D = 2048). Benchmarks build their random models with these."""
    from xlxmert.visual.backbones import ShapesBackboneConfig
    from xlxmert.visual.vocabulary import VocabularyConfig

    if preset not in TrainAllConfig.PRESETS:
        vocab = VocabularyConfig.from_preset(preset)
        return {"grid_size": vocab.grid_size, "num_clusters": vocab.num_clusters, "feature_dim": vocab.dim}
    recipe = TrainAllConfig.from_preset(preset)
    vocab = VocabularyConfig.from_preset(recipe.stage_preset)
    backbone = ShapesBackboneConfig.from_preset(recipe.stage_preset, output=recipe.backbone_output)
    return {
        "grid_size": recipe.grid_size or vocab.grid_size,
        "num_clusters": recipe.vocab_clusters or vocab.num_clusters,
        "feature_dim": backbone.output_dim,
    }


def _load_marker(work: Path, folder: str) -> dict[str, Any] | None:
    path = work / STAGE_RECORDS / f"{folder}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _write_marker(work: Path, folder: str, record: dict[str, Any]) -> None:
    """Record a finished stage; kept apart from its outputs so they can be copied as they are."""
    (work / STAGE_RECORDS).mkdir(parents=True, exist_ok=True)
    (work / STAGE_RECORDS / f"{folder}.json").write_text(json.dumps(record, indent=2) + "\n")


def train_all(
    out: str | Path,
    config: TrainAllConfig,
    work: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop_after: str | None = None,
) -> dict[str, Any] | None:
    """Run every stage not yet complete, assemble the model folder ``out``, evaluate, write the card.

    Returns the summary written to ``out/metrics.json``: per stage its wall-clock seconds (as
    measured when it ran) and its own report, plus the evaluation results per split. With
    ``stop_after`` (a stage name of :func:`recipe_stages`), returns None once that stage is complete.
    """
    log = log or LOG.info
    all_stages = recipe_stages(config)
    names = [stage.name for stage in all_stages]
    if stop_after is not None and stop_after not in names:
        raise XLXMERTError(f"unknown stage {stop_after!r}; choose one of {', '.join(names)}")
    out = Path(out)
    work = Path(work) if work is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / "train_all_config.json"
    saved = json.loads(config_path.read_text()) if config_path.is_file() else None
    if saved is not None and not same_settings(saved, config_to_dict(config), TrainAllConfig):
        raise XLXMERTError(
            f"{work} was started with other train-all settings ({config_path}); "
            "use another --work folder or delete it to start over"
        )
    config_path.write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")

    stages: dict[str, Any] = {}
    total = len(all_stages) + 2
    for number, stage in enumerate(all_stages, start=1):
        folder = work / stage.folder
        record = _load_marker(work, stage.folder)
        if record is not None:
            log(f"[{number}/{total}] {stage.name}: complete, skipped ({folder})")
        else:
            log(f"[{number}/{total}] {stage.name} → {folder}")
            start = time.perf_counter()
            report = stage.run(work, config, progress)
            record = {"seconds": round(time.perf_counter() - start, 1), "report": _jsonable(report)}
            _write_marker(work, stage.folder, record)
        stages[stage.name] = record
        if stage.name == stop_after:
            log(f"stopped after {stop_after}; rerun without --stop-after to continue")
            return None

    log(f"[{total - 1}/{total}] assembling the model folder → {out}")
    _assemble(work, out, config)
    update_model_index(out, recipe=config.preset, recipe_hash=recipe_hash(config))

    eval_folder = work / "eval"
    record = _load_marker(work, "eval")
    if record is None:
        log(f"[{total}/{total}] evaluation on {', '.join(EVAL_SPLITS)} → {eval_folder}")
        start = time.perf_counter()
        report = _evaluation(work, out, config, progress)
        record = {"seconds": round(time.perf_counter() - start, 1), "report": _jsonable(report)}
        _write_marker(work, "eval", record)
    else:
        log(f"[{total}/{total}] evaluation: complete, skipped ({eval_folder})")
    stages["evaluation"] = record

    summary = {
        "preset": config.preset,
        "command": config.command(out),
        "config": config_to_dict(config),
        "stages": stages,
        "training_seconds": sum(s["seconds"] for name, s in stages.items() if name != "evaluation"),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    from xlxmert.training.model_card import write_model_card

    write_model_card(out, summary, work)
    return summary


def _jsonable(value: Any) -> Any:
    """Drop what JSON cannot hold (tensors, paths become strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=lambda v: str(v) if isinstance(v, Path) else float(v)))
