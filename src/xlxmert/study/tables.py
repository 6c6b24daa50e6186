"""What each of the paper's Tables 1–4 needs: its rows, how each row's model is trained, how it
paints, the paper's numbers and the orderings the paper reports (checked with intervals by
:mod:`xlxmert.study.runner`).

Every model row is one pretraining run from the study's shared base (data, tokenizer, backbone,
grid features, visual vocabulary, generator and graders of the ``train-all`` recipe), with the
same steps, batch and learning rate; a row differs from X-LXMERT only by what the paper changes:

- ``x-lxmert``: visual words in, CCC out, uniform masking, CCC on captions (the full model);
- ``lxmert-grid``: exact grid features in, regression out (MVFR), LXMERT's Bernoulli(0.15) masking,
  CCC/MVFR texts from all data (captions and questions), no fully masked examples;
- ``x-uniter`` / ``uniter-grid``: the same two on UNITER's single stream (Table 2);
- Table 3 removes one refinement at a time: ``no-discrete`` (exact features in, regression out),
  ``no-uniform`` (Bernoulli 0.15, no fully masked examples), ``no-alignment`` (CCC on all data).

The paper's numbers are from Cho et al. (2020), COCO val; its VQA column is test-dev, GQA
test-std and NLVR2 test-P; its HUMMUS is the human masked-word score, ours the automatic one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Metric keys (evaluation.report's score names) → column label; LOWER_IS_BETTER flips orderings.
METRIC_LABELS = {
    "is": "IS↑",
    "fid": "FID↓",
    "rprec_easy": "R-prec-easy↑",
    "rprec_hard": "R-prec-hard↑",
    "semantic_mean": "Auto-HUMMUS↑",
    "facts_true": "Facts true↑",
    "all_facts_true": "All facts true↑",
    "vqa": "VQA↑",
    "gqa": "GQA↑",
    "nlvr2": "NLVR2↑",
    "seconds_per_image": "s / image↓",
}
LOWER_IS_BETTER = frozenset({"fid", "seconds_per_image"})
# Shown as percentages (the rest as they are).
PERCENT = frozenset(METRIC_LABELS) - {"is", "fid", "seconds_per_image"}
GENERATION_METRICS = (
    "is",
    "fid",
    "rprec_easy",
    "rprec_hard",
    "semantic_mean",
    "facts_true",
    "all_facts_true",
)
UNDERSTANDING_METRICS = ("vqa", "gqa", "nlvr2")


@dataclass(frozen=True)
class ModelSpec:
    """How one model row is pretrained: a transformer family and variant
    (:func:`~xlxmert.models.families.transformer_config`) plus overrides of the transformer and
    pretraining configs (on top of the study's shared settings)."""

    key: str
    label: str
    architecture: str = "lxmert"
    variant: str = "x"
    transformer: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)


# LXMERT's visual masking: each cell with probability 0.15, never the fully masked grid.
_BERNOULLI = {"visual_masking": "bernoulli", "mask_prob": 0.15, "full_mask_prob": 0.0}

MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec("x-lxmert", "X-LXMERT"),
        ModelSpec("lxmert-grid", "LXMERT+Grid", variant="grid", pretrain={**_BERNOULLI, "ccc_data": "all"}),
        ModelSpec("x-uniter", "X-UNITER", architecture="uniter"),
        ModelSpec(
            "uniter-grid",
            "UNITER+Grid",
            architecture="uniter",
            variant="grid",
            pretrain={**_BERNOULLI, "ccc_data": "all"},
        ),
        ModelSpec("no-discrete", "w/o discrete visual words (regression)", variant="grid"),
        ModelSpec("no-uniform", "w/o uniform masking (Bernoulli 0.15)", pretrain=dict(_BERNOULLI)),
        ModelSpec("no-alignment", "w/o data alignment (CCC on all data)", pretrain={"ccc_data": "all"}),
    )
}


@dataclass(frozen=True)
class SamplerRow:
    """A Table-4 row: how the model paints. ``name`` None: the model's own ``sampler/`` settings."""

    key: str
    label: str
    name: str | None
    steps: int | None = None
    temperature: float = 0.0
    guidance_scale: float = 1.0


@dataclass(frozen=True)
class Claim:
    """The paper's ordering: row ``better`` beats row ``worse`` on each of ``metrics``."""

    better: str
    worse: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """One paper table: its model rows (keys of :data:`MODELS`) or, for Table 4, the sampler rows
    of one model; the columns, the paper's numbers per row key and its orderings."""

    number: int
    title: str
    models: tuple[str, ...]
    metrics: tuple[str, ...]
    paper: dict[str, dict[str, float]]
    claims: tuple[Claim, ...]
    samplers: tuple[SamplerRow, ...] = ()
    finetune: bool = False
    # Row labels of the paper's own rows, where ours are named differently.
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def row_keys(self) -> tuple[str, ...]:
        """The table's painted rows: its samplers' keys (Table 4) or its models' keys."""
        return tuple(s.key for s in self.samplers) if self.samplers else self.models

    def label(self, key: str) -> str:
        if key == ORIGINAL:
            return "Original images"
        if key in self.labels:
            return self.labels[key]
        if self.samplers:
            return next(s.label for s in self.samplers if s.key == key)
        return MODELS[key].label if key in MODELS else key


_SCORES_T1 = ("is", "fid", "rprec_easy", "rprec_hard")
ORIGINAL = "original"  # the original images' row key in every table

TABLES: dict[int, TableSpec] = {
    1: TableSpec(
        1,
        "Comparing X-LXMERT and LXMERT+Grid on image generation, VQA, GQA and NLVR2",
        ("x-lxmert", "lxmert-grid"),
        GENERATION_METRICS + UNDERSTANDING_METRICS,
        {
            ORIGINAL: {"is": 36.6, "rprec_easy": 0.896, "rprec_hard": 0.476, "semantic_mean": 0.73},
            "x-lxmert": {
                "is": 22.7,
                "fid": 37.4,
                "rprec_easy": 0.408,
                "rprec_hard": 0.251,
                "semantic_mean": 0.49,
                "vqa": 0.686,
                "gqa": 0.584,
                "nlvr2": 0.724,
            },
            "lxmert-grid": {
                "is": 1.6,
                "fid": 316.7,
                "rprec_easy": 0.005,
                "rprec_hard": 0.066,
                "semantic_mean": 0.27,
                "vqa": 0.711,
                "gqa": 0.601,
                "nlvr2": 0.740,
            },
        },
        (
            Claim("x-lxmert", "lxmert-grid", _SCORES_T1),
            Claim(ORIGINAL, "x-lxmert", ("is", "rprec_easy", "rprec_hard")),
            Claim("lxmert-grid", "x-lxmert", UNDERSTANDING_METRICS),
        ),
        finetune=True,
        labels={"lxmert-grid": "LXMERT+Grid (probe painting)"},
    ),
    2: TableSpec(
        2,
        "Adding image generation to LXMERT and UNITER",
        ("x-uniter", "uniter-grid", "x-lxmert"),
        GENERATION_METRICS,
        {
            "uniter-grid": {"is": 2.4, "fid": 253.5},
            "x-uniter": {"is": 20.1, "fid": 51.4},
            "x-lxmert": {"is": 22.7, "fid": 37.4},
        },
        (Claim("x-uniter", "uniter-grid", ("is", "fid")), Claim("x-lxmert", "x-uniter", ("is", "fid"))),
    ),
    3: TableSpec(
        3,
        "The three refinements, ablated one at a time",
        ("x-lxmert", "no-discrete", "no-uniform", "no-alignment"),
        GENERATION_METRICS,
        {
            "x-lxmert": {"is": 22.7, "fid": 37.4},
            "no-discrete": {"is": 1.5, "fid": 304.4},
            "no-uniform": {"is": 2.1, "fid": 227.9},
            "no-alignment": {"is": 21.6, "fid": 46.1},
        },
        tuple(Claim("x-lxmert", k, ("is", "fid")) for k in ("no-discrete", "no-uniform", "no-alignment")),
    ),
    4: TableSpec(
        4,
        "Image quality across sampling strategies (one X-LXMERT model)",
        ("x-lxmert",),
        GENERATION_METRICS + ("seconds_per_image",),
        {
            "mask-predict-4": {
                "is": 22.7,
                "fid": 37.4,
                "rprec_easy": 0.408,
                "rprec_hard": 0.251,
                "semantic_mean": 0.49,
            },
            "tl-br": {
                "is": 19.8,
                "fid": 48.5,
                "rprec_easy": 0.269,
                "rprec_hard": 0.189,
                "semantic_mean": 0.43,
            },
            "random": {
                "is": 22.6,
                "fid": 35.9,
                "rprec_easy": 0.395,
                "rprec_hard": 0.247,
                "semantic_mean": 0.48,
            },
        },
        (
            Claim("mask-predict-4", "tl-br", _SCORES_T1),
            Claim("random", "tl-br", _SCORES_T1),
        ),
        samplers=(
            SamplerRow("tl-br", "TL→BR (argmax)", "tl-br"),
            SamplerRow("random", "Random (argmax)", "random"),
            SamplerRow("easy-first", "Easy-First (argmax)", "easy-first"),
            SamplerRow("mask-predict-4", "Mask-Predict-4 (argmax, the paper's)", "mask-predict", steps=4),
            SamplerRow("default", "The model's default (sampler/config.json)", None),
        ),
    ),
}


def table_spec(number: int) -> TableSpec:
    from xlxmert.errors import XLXMERTError

    if number not in TABLES:
        raise XLXMERTError(f"unknown table {number}; choose one of {', '.join(map(str, TABLES))}")
    return TABLES[number]
