"""Tiny runs of every training stage, for tests/test_checkpoints.py (also run in a subprocess
that is killed, so each stage imports only what it needs)."""

from __future__ import annotations

import json
from pathlib import Path


def run_stage(stage: str, out: Path, paths: dict[str, str]) -> list[float]:
    """Train ``stage`` tinily into ``out`` (4–6 steps, a checkpoint after each); its losses."""
    out = Path(out)
    if stage == "backbone":
        from xlxmert.training.backbone import train_backbone
        from xlxmert.visual.backbones import ShapesBackboneConfig

        small = ShapesBackboneConfig(widths=(8, 8, 16), feature_dim=16, train_grid_sizes=(8,))
        metrics = train_backbone(
            paths["shapes"], small, out, steps=4, batch_size=4, progress=False,
            val_split=None, max_images=8, checkpoint_every=1,
        )  # fmt: skip
        return metrics["losses"]
    if stage == "evaluator":
        from xlxmert.evaluation.graders.evaluator import (
            EvaluatorConfig,
            EvaluatorTrainingConfig,
            train_evaluator,
        )

        training = EvaluatorTrainingConfig(steps=4, batch_size=4)
        config = EvaluatorConfig(widths=(8, 8, 16, 16), image_size=32)
        train_evaluator(
            paths["shapes"], out, config=config, training=training, n=8, progress=False, checkpoint_every=1
        )
        return json.loads((out / "training.json").read_text())["losses"]
    if stage == "matcher":
        from xlxmert.evaluation.graders.matcher import MatcherConfig
        from xlxmert.evaluation.graders.matcher_training import MatcherTrainingConfig, train_matcher

        training = MatcherTrainingConfig(steps=4, batch_size=4, easy_negatives=2, hard_negatives=2)
        config = MatcherConfig(
            widths=(8, 8, 16, 16), image_size=32, dim=16, heads=2, cells=8, fusion_layers=1
        )
        train_matcher(
            paths["shapes"], out, config=config, training=training, n=8, progress=False, checkpoint_every=1
        )
        return json.loads((out / "training.json").read_text())["losses"]
    if stage == "generator":
        from test_generator_training import _config as generator_config
        from xlxmert.training.generator import train_generator

        config = generator_config(steps=4, checkpoint_every=1, sample_every=100)
        history = train_generator(paths["data"], paths["vocab"], out, config, progress=False).history
        return [h["loss_g"] for h in history] + [h["loss_d"] for h in history]
    if stage == "pretrain":
        from test_pretrain import metrics as pretrain_metrics
        from test_pretrain import run as pretrain_run

        pretrain_run(_tiny_of(paths), out, steps=6, checkpoint_every=1)
        return [v for _, split, m, v in pretrain_metrics(out) if split == "train" and m.startswith("loss")]
    if stage == "finetune":
        from xlxmert.training.finetune import FinetuneConfig, finetune

        config = FinetuneConfig(
            task="vqa",
            epochs=1,
            batch_size=8,
            lr=1e-3,
            head_lr=2e-3,
            max_train=32,
            max_eval=8,
            checkpoint_every=1,
        )
        finetune(paths["model"], paths["shapes"], out, config, progress=False)
        with (out / "finetune-vqa" / "metrics.csv").open() as f:
            return [
                float(r.split(",")[3])
                for r in f.read().splitlines()[1:]
                if r.split(",")[1:3] == ["train", "loss"]
            ]
    raise ValueError(stage)


def _tiny_of(paths: dict[str, str]) -> dict[str, Path]:
    return {k: Path(paths[k]) for k in ("data", "vocab", "feats", "tok")}


def checkpoints_of(stage: str, out: Path) -> Path:
    """Where ``stage`` keeps its checkpoints in ``out``."""
    return Path(out) / ("finetune-vqa" if stage == "finetune" else "") / "checkpoints"
