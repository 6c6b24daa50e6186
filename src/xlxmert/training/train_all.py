"""``xlxmert train-all``: the whole pipeline, in order, resumable stage by stage.

    ShapeScenes data → tokenizer → backbone → grid features → visual vocabulary (+ ids)
    → generator → X-LXMERT pretraining → evaluation suite → evaluation → model folder + card

Intermediate outputs live in a work folder (default ``<out>.work``), one subfolder per stage:

    WORK/data/<split>/   WORK/tokenizer/   WORK/backbone/   WORK/features/<split>/   WORK/vocab/
    WORK/generator/      WORK/transformer/ WORK/eval-suite/ WORK/eval/<split>/

A stage with a record in ``WORK/.stages/<stage>.json`` (written when it finished) is skipped; a
stage cut off part-way is rerun, and the stages that checkpoint (feature extraction, generator,
pretraining) resume where they stopped. The final model folder ``out`` gets the five components,
``MODEL_CARD.md`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import config_to_dict, same_settings
from xlxmert.utils.model_folder import COMPONENTS, copy_component, update_model_index

STAGE_RECORDS = ".stages"
EVAL_SPLITS = ("test", "compositional")


@dataclass(frozen=True)
class TrainAllConfig:
    """Sizes of every stage. ``PRESETS``: ``shapes-64`` (the shipped default model) and ``tiny``
    (seconds per stage; for tests and smoke runs)."""

    preset: str = "shapes-64"
    image_size: int = 64
    seed: int = 0
    num_train: int = 20000
    num_eval: int = 1000  # each of val, test, compositional
    data_workers: int = 1
    tokenizer_vocab_size: int = 1000
    backbone_steps: int = 1500
    # Grid features: the backbone's D-dim feature map ("features") or its per-cell predictions
    # ("predictions": place probabilities + colour×shape coverages, ShapesBackboneConfig.output).
    # Measured in MODEL_CARD.md: predictions leave each place's background at 0-0.63 nats (the
    # feature map: 4.7-5.7 nats over 250-489 words) and their generator reconstructs as well
    # (16×16, 2400 steps: PSNR 26.0 dB, object F1 0.895). With the raw-centroid CCC output no
    # CPU-length pretraining on them predicted object words; the shipped model uses them on an 8×8
    # grid with XLxmertConfig.standardize_ccc_output (the defaults here stay the first pipeline's).
    backbone_output: str = "features"
    # Cells per side of the visual grid; None: the vocabulary preset's (16 for shapes-64). The
    # paper's COCO grid is 8×8; on ShapeScenes 8 gives 64 visual tokens instead of 256.
    grid_size: int | None = None
    vocab_clusters: int | None = None  # None: the vocabulary preset's
    vocab_sample_size: int | None = None  # None: the vocabulary preset's
    # Sized for about an hour of a 2-core CPU (generator and pretraining can run side by side);
    # bf16 autocast measured about 2x faster than fp32 for both on an AVX512-BF16 CPU.
    generator_steps: int = 800
    generator_batch_size: int | None = 16  # None: the generator trainer's default
    generator_bf16: bool = True
    pretrain_steps: int = 1500
    pretrain_batch_size: int | None = 32  # None: the pretraining preset's
    pretrain_lr: float | None = None  # None: the pretraining preset's
    standardize_features: bool = False  # XLxmertConfig.standardize_features
    standardize_ccc_output: bool = False  # XLxmertConfig.standardize_ccc_output
    caption_dropout: float = 0.0  # PretrainConfig.caption_dropout (for classifier-free guidance)
    # PretrainConfig.full_mask_prob. Measured on the K = 2048 model: the caption was worth 0.95
    # nats per cell with every cell masked but 0.03 with 10 % visible.
    full_mask_prob: float = 0.0
    ccc_class_balance: float = 0.0  # PretrainConfig.ccc_class_balance
    task_ratio: tuple[int, int, int] = (1, 1, 1)  # PretrainConfig.task_ratio
    position_frequencies: int = 0  # XLxmertConfig.position_frequencies
    mixed_precision: str = "bf16"  # pretraining autocast: "no", "bf16" or "fp16"
    evaluator_steps: int = 1000
    matcher_steps: int = 600
    eval_n: int = 300
    # How the model paints: evaluated with these settings and saved as the model's sampler/ (the
    # CLI's and PaintPipeline's default for it).
    eval_sampler: str = "mask-predict"
    eval_steps: int | None = 4
    eval_temperature: float = 0.0
    eval_anneal: bool = False
    eval_guidance_scale: float = 1.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "shapes-64": {},
        "tiny": {
            "num_train": 64,
            "num_eval": 16,
            "tokenizer_vocab_size": 200,
            "backbone_steps": 20,
            "vocab_sample_size": 20000,
            "generator_steps": 4,
            "generator_batch_size": 4,
            "pretrain_steps": 6,
            "pretrain_batch_size": 8,
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

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainAllConfig:
        if name not in cls.PRESETS:
            raise XLXMERTError(f"unknown train-all preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], "preset": name, **overrides})

    def command(self, out: str | Path) -> str:
        """The ``xlxmert train-all`` command line that reproduces this config."""
        preset = TrainAllConfig.from_preset(self.preset)
        parts = [f"xlxmert train-all --preset {self.preset} --out {Path(out).as_posix()}"]
        for name, flag in CLI_FLAGS.items():
            value = getattr(self, name)
            if value != getattr(preset, name):
                if isinstance(value, (tuple, list)):
                    value = ",".join(map(str, value))
                parts.append(flag if isinstance(value, bool) else f"{flag} {value}")
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


# Config fields that ``xlxmert train-all`` exposes as flags (kept here so a model card can print
# the exact command).
CLI_FLAGS = {
    "seed": "--seed",
    "backbone_output": "--backbone-output",
    "grid_size": "--grid-size",
    "vocab_clusters": "--vocab-clusters",
    "pretrain_batch_size": "--pretrain-batch-size",
    "pretrain_lr": "--pretrain-lr",
    "full_mask_prob": "--full-mask-prob",
    "ccc_class_balance": "--ccc-class-balance",
    "task_ratio": "--task-ratio",
    "position_frequencies": "--position-frequencies",
    "caption_dropout": "--caption-dropout",
    "standardize_features": "--standardize-features",
    "standardize_ccc_output": "--standardize-ccc-output",
    "eval_sampler": "--eval-sampler",
    "eval_steps": "--eval-steps",
    "eval_temperature": "--eval-temperature",
    "eval_anneal": "--eval-anneal",
    "eval_guidance_scale": "--eval-guidance-scale",
    "num_train": "--num-train",
    "generator_steps": "--generator-steps",
    "pretrain_steps": "--pretrain-steps",
    "eval_n": "--eval-n",
    "data_workers": "--data-workers",
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


def _transformer(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.models.transformer import XLxmertConfig
    from xlxmert.training.pretrain import PretrainConfig, pretrain

    overrides: dict[str, Any] = {
        "steps": cfg.pretrain_steps,
        "seed": cfg.seed,
        "mixed_precision": cfg.mixed_precision,
        "caption_dropout": cfg.caption_dropout,
        "full_mask_prob": cfg.full_mask_prob,
        "ccc_class_balance": cfg.ccc_class_balance,
        "task_ratio": tuple(cfg.task_ratio),
    }
    if cfg.pretrain_batch_size is not None:
        overrides["batch_size"] = cfg.pretrain_batch_size
    if cfg.pretrain_lr is not None:
        overrides["lr"] = cfg.pretrain_lr
    model = pretrain(
        work / "data",
        work / "vocab",
        work / "tokenizer",
        work / "transformer",
        XLxmertConfig.from_preset(
            cfg.stage_preset,
            standardize_features=cfg.standardize_features,
            standardize_ccc_output=cfg.standardize_ccc_output,
            position_frequencies=cfg.position_frequencies,
        ),
        PretrainConfig.from_preset(cfg.stage_preset, **overrides),
        progress=progress,
    )
    return {"parameters": model.num_parameters()}


def _assemble(work: Path, out: Path, cfg: TrainAllConfig) -> None:
    """Copy the five components into ``out`` (a model folder) and write its sampler settings."""
    sources = {
        "tokenizer": work / "tokenizer",
        # The backbone as the features were extracted with it (its output setting included).
        "backbone": work / "transformer" / "backbone",
        "vocabulary": work / "transformer" / "vocabulary",
        "transformer": work / "transformer" / "transformer",
        "generator": work / "generator" / "generator",
    }
    for name in COMPONENTS:
        copy_component(sources[name], out, name)
    # The vocabulary's per-split id arrays are training data, not part of the model.
    shutil.rmtree(out / "vocabulary" / "ids", ignore_errors=True)
    shutil.rmtree(out / "vocabulary" / "backbone", ignore_errors=True)
    cfg.sampler.save_pretrained(out / "sampler")
    update_model_index(out)


def _eval_suite(work: Path, cfg: TrainAllConfig, progress: bool) -> dict[str, Any]:
    from xlxmert.evaluation.report import train_suite

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


STAGES: tuple[Stage, ...] = (
    Stage("data", "data", _data),
    Stage("tokenizer", "tokenizer", _tokenizer),
    Stage("backbone", "backbone", _backbone),
    Stage("features", "features", _features),
    Stage("vocabulary", "vocab", _vocab),
    Stage("generator", "generator", _generator),
    Stage("pretraining", "transformer", _transformer),
    Stage("evaluation suite", "eval-suite", _eval_suite),
)


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
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    stop_after: str | None = None,
) -> dict[str, Any] | None:
    """Run every stage not yet complete, assemble the model folder ``out``, evaluate, write the card.

    Returns the summary written to ``out/metrics.json``: per stage its wall-clock seconds (as
    measured when it ran) and its own report, plus the evaluation results per split. With
    ``stop_after`` (a stage name in :data:`STAGES`), returns None once that stage is complete.
    """
    names = [stage.name for stage in STAGES]
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
    for number, stage in enumerate(STAGES, start=1):
        folder = work / stage.folder
        record = _load_marker(work, stage.folder)
        if record is not None:
            log(f"[{number}/{len(STAGES) + 2}] {stage.name}: complete, skipped ({folder})")
        else:
            log(f"[{number}/{len(STAGES) + 2}] {stage.name} → {folder}")
            start = time.perf_counter()
            report = stage.run(work, config, progress)
            record = {"seconds": round(time.perf_counter() - start, 1), "report": _jsonable(report)}
            _write_marker(work, stage.folder, record)
        stages[stage.name] = record
        if stage.name == stop_after:
            log(f"stopped after {stop_after}; rerun without --stop-after to continue")
            return None

    log(f"[{len(STAGES) + 1}/{len(STAGES) + 2}] assembling the model folder → {out}")
    _assemble(work, out, config)
    update_model_index(out, preset=config.stage_preset)

    eval_folder = work / "eval"
    record = _load_marker(work, "eval")
    if record is None:
        log(f"[{len(STAGES) + 2}/{len(STAGES) + 2}] evaluation on {', '.join(EVAL_SPLITS)} → {eval_folder}")
        start = time.perf_counter()
        report = _evaluation(work, out, config, progress)
        record = {"seconds": round(time.perf_counter() - start, 1), "report": _jsonable(report)}
        _write_marker(work, "eval", record)
    else:
        log(f"[{len(STAGES) + 2}/{len(STAGES) + 2}] evaluation: complete, skipped ({eval_folder})")
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
