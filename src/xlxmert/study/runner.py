"""``xlxmert study tableN``: train what a table needs, evaluate every row alike, write the table.

Folders (everything resumable; a finished piece is never redone)::

    DATA/                       ShapeScenes data root (generated with the recipe's sizes if missing)
    OUT/work/                   the shared base: train-all's stages data (→ DATA), tokenizer,
                                backbone, features, vocab, generator, eval-suite (the graders)
    OUT/models/<row>/           one pretrained model folder per model row (+ generator, sampler/)
    OUT/models/.stages/<row>.json   the record of a finished row (its settings and time)
    OUT/finetuned/<row>/<task>/seed-S/   Table 1's fine-tuning runs (heads/<task>/report.json)
    OUT/evals/<row>/<sampler>/seed-S/    xlxmert evaluate's folder per row, sampler and seed
    OUT/tableN.md, OUT/tableN.json, OUT/tableN.png

Every row is evaluated on the same images and captions (one caption per test image, drawn with
each seed) by the same graders; the seeds also draw the sampling, so the intervals cover both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from xlxmert.errors import XLXMERTError
from xlxmert.study.tables import (
    MODELS,
    UNDERSTANDING_METRICS,
    ModelSpec,
    SamplerRow,
    TableSpec,
    table_spec,
)
from xlxmert.training.train_all import TrainAllConfig
from xlxmert.utils.config import PresetConfig, config_to_dict

Log = Callable[[str], None]
DEFAULT_SAMPLER = "default"  # the eval folder of the model's own sampler/ settings


LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyConfig(PresetConfig):
    """A study's budget. ``small`` is the ``tiny`` train-all recipe (a CI-sized smoke run);
    ``full`` the ``shapes-64`` recipe with every model row pretrained for as many steps as the
    shipped model's four pretraining runs together (18 500 at batch 128), the reported budget.

    ``seeds``: evaluation seeds 0..seeds-1 (captions, sampling and R-precision negatives; Table 1's
    fine-tuning runs once per seed). ``pretrain_steps`` / ``eval_n``: None takes the recipe's.
    ``n_boot``: bootstrap replicates of per-caption scores; ``set_boot``: of FID/IS (recomputed per
    replicate). ``timing_images``: captions painted to time each Table-4 sampler.
    ``easy_negatives``: R-precision-easy's other captions per image (the paper's 1 in 100).
    """

    preset: str = field(default="full", metadata={"help": "the budget's name"})
    recipe: str = field(
        default="shapes-64",
        metadata={
            "help": "the train-all recipe of the shared stages and model rows",
            "choices": ("shapes-64", "tiny"),
        },
    )
    seeds: int = field(default=3, metadata={"help": "evaluation (and Table 1 fine-tuning) seeds"})
    pretrain_steps: int | None = field(
        default=18500, metadata={"help": "pretraining steps per model row (none: the recipe's)"}
    )
    eval_n: int | None = field(default=None, metadata={"help": "test captions per seed (none: the recipe's)"})
    finetune_epochs: int = field(default=3, metadata={"help": "Table 1's fine-tuning epochs"})
    finetune_batch_size: int = field(default=32, metadata={"help": "Table 1's fine-tuning batch size"})
    finetune_max_train: int | None = field(
        default=None, metadata={"help": "Table 1's fine-tuning examples (none: all)"}
    )
    n_boot: int = field(default=1000, metadata={"help": "bootstrap replicates of per-caption scores"})
    set_boot: int = field(default=50, metadata={"help": "bootstrap replicates of FID/IS"})
    timing_images: int = field(default=16, metadata={"help": "captions painted to time each Table 4 sampler"})
    easy_negatives: int = field(default=99, metadata={"help": "R-precision-easy's other captions per image"})
    confidence: float = field(default=0.95, metadata={"help": "level of the bootstrap intervals"})

    PRESET_KIND: ClassVar[str] = "study budget"
    PRESET_FIELD: ClassVar[str] = "preset"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "small": {
            "recipe": "tiny",
            "pretrain_steps": None,
            "finetune_epochs": 1,
            "finetune_batch_size": 8,
            "n_boot": 200,
            "set_boot": 10,
            "timing_images": 4,
        },
    }

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise XLXMERTError(f"--seeds must be at least 1, got {self.seeds}")
        if not 0 < self.confidence < 1:
            raise XLXMERTError(f"confidence must be between 0 and 1, got {self.confidence}")

    def train_all_config(self) -> TrainAllConfig:
        return TrainAllConfig.from_preset(self.recipe)


def _log(line: str) -> None:
    LOG.info(line)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, value: Any) -> None:
    """Write atomically (a cut-off run leaves no half-written record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=float) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------- the shared base
def prepare_base(data: Path, out: Path, recipe: TrainAllConfig, progress: bool, log: Log) -> Path:
    """Run train-all's stages up to the generator, then its evaluation suite (the graders), in
    ``OUT/work`` with ``OUT/work/data`` → ``data`` (generated there with the recipe's sizes when it
    has no ShapeScenes splits). The recipe's own pretraining runs are not needed and not run."""
    from xlxmert.training.train_all import _load_marker, _write_marker, recipe_stages, train_all

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    link = work / "data"
    data = data.resolve()
    if link.is_symlink():
        if link.resolve() != data:
            raise XLXMERTError(
                f"{out} was started with the data root {link.resolve()}, not {data}; use another --out"
            )
    elif link.exists():
        raise XLXMERTError(f"{link} exists and is not a link to --data; use another --out")
    else:
        data.mkdir(parents=True, exist_ok=True)
        link.symlink_to(data, target_is_directory=True)
    splits = ("train", "val", "test", "compositional")
    if _load_marker(work, "data") is None and all(
        (data / s / f"captions_{s}.json").is_file() for s in splits
    ):
        _write_marker(work, "data", {"seconds": 0.0, "report": {"data": str(data), "given": True}})

    def stage_log(line: str) -> None:  # train-all's "rerun without --stop-after" hint is not ours
        if not line.startswith("stopped after"):
            log(line)

    train_all(out / "work-model", recipe, work=work, progress=progress, log=stage_log, stop_after="generator")
    suite = next(s for s in recipe_stages(recipe) if s.name == "evaluation suite")
    if _load_marker(work, suite.folder) is None:
        log(f"graders → {work / suite.folder}")
        start = time.perf_counter()
        report = suite.run(work, recipe, progress)
        _write_marker(
            work, suite.folder, {"seconds": round(time.perf_counter() - start, 1), "report": report}
        )
    else:
        log(f"graders: complete, skipped ({work / suite.folder})")
    return work


# ---------------------------------------------------------------------- model rows
def row_configs(spec: ModelSpec, recipe: TrainAllConfig, study: StudyConfig) -> tuple[Any, Any]:
    """The transformer and pretraining configs of a model row: the recipe's settings as its last
    pretraining run leaves them, the study's steps, and the row's own overrides."""
    from xlxmert.models.families import transformer_config
    from xlxmert.training.pretrain import PretrainConfig

    last = recipe.continuations[-1] if recipe.continuations else None

    def final(name: str) -> Any:
        value = getattr(last, name, None) if last is not None else None
        return getattr(recipe, name) if value is None else value

    model = transformer_config(
        spec.architecture,
        recipe.stage_preset,
        spec.variant,
        standardize_features=recipe.standardize_features,
        standardize_ccc_output=final("standardize_ccc_output"),
        position_frequencies=recipe.position_frequencies,
        **spec.transformer,
    )
    settings: dict[str, Any] = {
        "steps": study.pretrain_steps or recipe.pretrain_steps,
        "seed": recipe.seed,
        "mixed_precision": recipe.mixed_precision,
        "caption_dropout": recipe.caption_dropout,
        "full_mask_prob": final("full_mask_prob"),
        "ccc_class_balance": recipe.ccc_class_balance,
        "task_ratio": tuple(final("task_ratio")),
    }
    if recipe.pretrain_batch_size is not None:
        settings["batch_size"] = recipe.pretrain_batch_size
    lr = last.lr if last is not None and last.lr is not None else recipe.pretrain_lr
    if lr is not None:
        settings["lr"] = lr
    settings.update(spec.pretrain)
    return model, PretrainConfig.from_preset(recipe.stage_preset, **settings)


def train_model(
    spec: ModelSpec,
    work: Path,
    out: Path,
    recipe: TrainAllConfig,
    study: StudyConfig,
    progress: bool,
    log: Log,
) -> Path:
    """Pretrain a model row into ``OUT/models/<key>`` (skipped when its record exists)."""
    from xlxmert.training.pretrain import pretrain
    from xlxmert.utils.model_folder import copy_component, update_model_index

    model_cfg, train_cfg = row_configs(spec, recipe, study)
    settings = {"transformer": config_to_dict(model_cfg), "pretraining": config_to_dict(train_cfg)}
    settings = json.loads(json.dumps(settings, default=list))
    folder = out / "models" / spec.key
    record_path = out / "models" / ".stages" / f"{spec.key}.json"
    record = _read_json(record_path)
    if record is not None:
        if record["settings"] != settings:
            raise XLXMERTError(
                f"{folder} was trained with other settings ({record_path}); use another --out "
                "or delete the row's folder and record to retrain it"
            )
        log(f"model {spec.label}: trained, skipped ({folder})")
        return folder
    log(f"model {spec.label}: pretraining {train_cfg.steps} steps → {folder}")
    start = time.perf_counter()
    features = work / "features" / "train" if model_cfg.exact_features else None
    pretrain(
        work / "data",
        work / "vocab",
        work / "tokenizer",
        folder,
        model_cfg,
        train_cfg,
        features_dir=features,
        progress=progress,
    )
    copy_component(work / "generator" / "generator", folder, "generator")
    sampler = recipe.sampler
    if model_cfg.visual_target == "regression":  # a regression head has no distribution to sample
        sampler = dataclasses.replace(sampler, temperature=0.0, anneal=False)
    sampler.save_pretrained(folder / "sampler")
    update_model_index(folder, {"sampler": sampler}, study_row=spec.key)
    _write_json(record_path, {"settings": settings, "seconds": round(time.perf_counter() - start, 1)})
    return folder


def finetune_scores(
    key: str, model_dir: Path, data: Path, out: Path, study: StudyConfig, progress: bool, log: Log
) -> dict[str, list[float]]:
    """Table 1's understanding columns: the model fine-tuned on each task once per seed, scored
    on the test split (``task → [score per seed]``). A finished run (its report) is not redone."""
    from xlxmert.training.finetune import MAIN_METRIC, REPORT_FILE, FinetuneConfig, finetune

    scores: dict[str, list[float]] = {}
    for task in UNDERSTANDING_METRICS:
        scores[task] = []
        for seed in range(study.seeds):
            run = out / "finetuned" / key / task / f"seed-{seed}"
            report_path = run / "heads" / task / REPORT_FILE
            report = _read_json(report_path)
            if report is None or "test" not in report:
                log(f"fine-tune {key} on {task}, seed {seed} → {run}")
                config = FinetuneConfig(
                    task,
                    test_split="test",
                    epochs=study.finetune_epochs,
                    batch_size=study.finetune_batch_size,
                    seed=seed,
                    max_train=study.finetune_max_train,
                    max_eval=study.eval_n,
                    mixed_precision="bf16" if torch.cuda.is_available() else "no",
                )
                report = finetune(model_dir, data, run, config, progress=progress)
            else:
                log(f"fine-tune {key} on {task}, seed {seed}: complete, skipped ({run})")
            scores[task].append(float(report["test"][MAIN_METRIC[task]]))
    return scores


# ---------------------------------------------------------------------- evaluation
def _sampling(row: SamplerRow | None, model_dir: Path) -> dict[str, Any]:
    """EvaluationConfig's sampler fields of a Table-4 row (None / default: the model's sampler/)."""
    from xlxmert.sampling.visual import SamplerConfig

    if row is None or row.name is None:
        s = SamplerConfig.from_pretrained(model_dir / "sampler")
        return {
            "sampler": s.name,
            "steps": s.steps,
            "temperature": s.temperature,
            "anneal": s.anneal,
            "guidance_scale": s.guidance_scale,
        }
    return {
        "sampler": row.name,
        "steps": row.steps,
        "temperature": row.temperature,
        "anneal": False,
        "guidance_scale": row.guidance_scale,
    }


def evaluate_row(
    model_dir: Path,
    eval_dir: Path,
    work: Path,
    n: int,
    sampling: dict[str, Any],
    seeds: int,
    progress: bool,
    easy_negatives: int = 99,
) -> list[dict[str, Any]]:
    """``xlxmert evaluate`` of one model with one sampler, once per seed (cached by evaluate)."""
    from xlxmert.evaluation.report import IMAGE_METRICS, EvaluationConfig, evaluate

    results = []
    for seed in range(seeds):
        config = EvaluationConfig(
            split="test", n=n, metrics=IMAGE_METRICS, seed=seed, easy_negatives=easy_negatives, **sampling
        )
        results.append(
            evaluate(
                [model_dir], work / "data", work / "eval-suite", eval_dir / f"seed-{seed}", config, progress
            )
        )
    return results


def seconds_per_image(
    model_dir: Path, eval_dir: Path, sampling: dict[str, Any], captions: list[str]
) -> float:
    """Wall-clock seconds per painted image with ``sampling`` (measured once, then cached)."""
    from xlxmert.pipelines import PaintPipeline
    from xlxmert.sampling.visual import SamplerConfig

    key = {**sampling, "images": len(captions)}
    cached = _read_json(eval_dir / "timing.json")
    if cached is not None and cached["settings"] == key:
        return float(cached["seconds_per_image"])
    pipe = PaintPipeline.from_pretrained(model_dir)
    sampler = SamplerConfig(
        sampling["sampler"], sampling["steps"], sampling["temperature"], sampling["anneal"]
    ).build()
    start = time.perf_counter()
    pipe(captions, sampler=sampler, seed=0, guidance_scale=sampling["guidance_scale"])
    value = (time.perf_counter() - start) / len(captions)
    _write_json(eval_dir / "timing.json", {"settings": key, "seconds_per_image": value})
    return value


# ---------------------------------------------------------------------- one table
def run_table(
    number: int,
    data: str | Path,
    out: str | Path,
    study: StudyConfig,
    recipe: TrainAllConfig | None = None,
    progress: bool = True,
    log: Log = _log,
) -> dict[str, Any]:
    """Train, evaluate and write ``OUT/tableN.{md,json,png}``; returns the JSON's content."""
    from xlxmert.study.collect import collect_rows, table_results
    from xlxmert.study.render import write_table

    spec: TableSpec = table_spec(number)
    data, out = Path(data), Path(out)
    recipe = recipe or study.train_all_config()
    n = study.eval_n or recipe.eval_n
    start = time.perf_counter()
    work = prepare_base(data, out, recipe, progress, log)
    model_dirs = {
        key: train_model(MODELS[key], work, out, recipe, study, progress, log) for key in spec.models
    }

    # (row key, model dir, eval folder, sampling) for every painted row
    painted: list[tuple[str, Path, Path, dict[str, Any]]] = []
    if spec.samplers:
        model_dir = model_dirs[spec.models[0]]
        for row in spec.samplers:
            folder = out / "evals" / spec.models[0] / (DEFAULT_SAMPLER if row.name is None else row.key)
            painted.append((row.key, model_dir, folder, _sampling(row, model_dir)))
    else:
        for key, model_dir in model_dirs.items():
            painted.append(
                (key, model_dir, out / "evals" / key / DEFAULT_SAMPLER, _sampling(None, model_dir))
            )
    evaluations = {}
    for key, model_dir, folder, sampling in painted:
        log(
            f"evaluate {spec.label(key)} ({sampling['sampler']}) on {n} test captions × {study.seeds} seed(s)"
        )
        evaluations[key] = evaluate_row(
            model_dir, folder, work, n, sampling, study.seeds, progress, study.easy_negatives
        )

    extra: dict[str, dict[str, list[float]]] = {}
    if spec.finetune:
        for key, model_dir in model_dirs.items():
            extra[key] = finetune_scores(key, model_dir, work / "data", out, study, progress, log)
    if "seconds_per_image" in spec.metrics:
        from xlxmert.evaluation.split import choose_captions, load_examples

        captions = choose_captions(load_examples(work / "data", "test", study.timing_images), seed=0)
        for key, model_dir, folder, sampling in painted:
            extra.setdefault(key, {})["seconds_per_image"] = [
                seconds_per_image(model_dir, folder, sampling, captions)
            ]

    log(f"bootstrap intervals ({study.n_boot} replicates; FID/IS {study.set_boot})")
    rows = collect_rows(spec, painted, evaluations, work, n, study)
    results = table_results(spec, rows, extra, study)
    results.update(
        {
            "budget": config_to_dict(study),
            "recipe": config_to_dict(recipe),
            "data": str(data.resolve()),
            "num_images": n,
            "seeds": list(range(study.seeds)),
            "seconds": round(time.perf_counter() - start, 1),
            "command": f"xlxmert study table{number} --data {data} --out {out} --budget {study.preset} "
            f"--seeds {study.seeds}",
        }
    )
    write_table(out, spec, results)
    log(f"wrote {out}/table{number}.md, .json and .png")
    return results
