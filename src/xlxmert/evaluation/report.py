"""The paper's Table 1 on ShapeScenes: every metric for original images, reconstructions, models
and controls, written as JSON, a Markdown table and a figure like Fig. 2/3.

Rows (each scored with the same captions, one per test image, chosen with the seed):

- ``Original images``: the ceiling of every semantic metric;
- per model: ``X-LXMERT (<name>)`` (images painted from the captions), ``Reconstruction from
  ground-truth ids`` (the model's generator painting the visual words of the original image, the
  generator's ceiling), and the control ``Empty caption`` (painted from no words at all);
- the control ``Original, other image's caption`` (each original image against the caption of
  another image: chance level for every semantic metric).

Fact-style scores can be gamed by painting many objects; R-precision-hard and the all-facts-true
rate cannot, so the table shows them side by side.

Caching: under ``OUT/models/<name>/`` each model keeps its painted images (``generated/``,
``reconstruction/``, ``empty/``) with the settings that made them and its scores; a rerun with the
same settings reuses both, so a table can be rebuilt (or extended with ``--compare``) without
painting again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from xlxmert.data.images import load_image
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import EvaluatorClassLogits, EvaluatorFeatures, evaluator_accuracy
from xlxmert.evaluation.graders.suite import EvaluationSuite
from xlxmert.evaluation.metrics.fidelity import frechet_distance, inception_score, load_feature_network
from xlxmert.evaluation.metrics.rprecision import r_precision
from xlxmert.evaluation.metrics.semantic import fact_scores, semantic_accuracy
from xlxmert.evaluation.metrics.tasks import gqa_accuracy, nlvr2_accuracy, understanding_baselines, vqa_score
from xlxmert.evaluation.render import RELATIVE_KEYS, comparison_figure, markdown_report, relative_scores
from xlxmert.evaluation.split import EvalExample, choose_captions, load_examples, stack_images

IMAGE_METRICS = ("fid", "is", "r-precision", "semantic", "facts")
TASK_METRICS = ("vqa", "gqa", "nlvr2", "captioning")
METRICS = IMAGE_METRICS + TASK_METRICS
SCORES_VERSION = 1  # bump when a metric's definition changes, so cached scores are recomputed


def parse_metrics(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma list of METRICS → a tuple in METRICS order."""
    if spec.strip() == "all":
        return METRICS
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in METRICS]
    if unknown or not names:
        raise XLXMERTError(
            f"unknown metrics {unknown or [spec]}; choose 'all' or a comma list of {', '.join(METRICS)}"
        )
    return tuple(m for m in METRICS if m in names)


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``xlxmert evaluate`` measures and how the models paint."""

    split: str = field(default="test", metadata={"help": "split whose captions are painted"})
    n: int | None = field(default=500, metadata={"help": "images of the split (none: all)"})
    metrics: tuple[str, ...] = METRICS
    sampler: str = field(
        default="mask-predict",
        metadata={"help": "visual sampler", "choices": ("mask-predict", "tl-br", "random", "easy-first")},
    )
    steps: int | None = field(
        default=None,
        metadata={
            "help": "sampling steps, Mask-Predict-K: K (none: 4 for mask-predict, else one per grid cell)"
        },
    )
    temperature: float = field(default=0.0, metadata={"help": "0 = argmax (the paper); > 0 samples ids"})
    anneal: bool = field(default=False, metadata={"help": "decay the temperature linearly to 0"})
    guidance_scale: float = field(
        default=1.0, metadata={"help": "classifier-free guidance (1 = none, the paper)"}
    )
    seed: int = 0
    batch_size: int = field(default=16, metadata={"help": "captions painted at once"})
    easy_negatives: int = field(default=99, metadata={"help": "R-precision-easy's other captions per image"})
    hard_negatives: int = field(
        default=9, metadata={"help": "R-precision-hard's contradicting captions per image"}
    )
    figure_rows: int = field(default=6, metadata={"help": "captions in figure.png"})
    # A user-supplied feature network (.pt2, e.g. Inception-v3 with the FID weights): adds "FID-ext".
    feature_network: str | None = field(
        default=None,
        metadata={
            "help": "a torch.export'ed feature network (e.g. Inception-v3 with the FID weights) "
            "for an extra FID",
            "metavar": "FILE.pt2",
        },
    )
    device: str = field(
        default="cpu",
        metadata={"help": "where the models paint, caption and answer (the graders stay on the CPU)"},
    )


# ---------------------------------------------------------------------- scoring one set of images
def score_images(
    suite: EvaluationSuite,
    images: torch.Tensor,
    captions: Sequence[str],
    scenes: Sequence,
    reference: torch.Tensor | None,
    metrics: Sequence[str],
    config: EvaluationConfig,
    external: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Image metrics of ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` meant to show ``captions``.

    ``scenes[i]`` is the scene ``captions[i]`` describes; ``reference`` the original images FID
    compares with (None: no FID, e.g. for the originals themselves); ``external`` a user-supplied
    feature network for a second FID (``fid_external``).
    """
    scores: dict[str, Any] = {}
    with torch.no_grad():
        if "fid" in metrics and reference is not None:
            fake = images
            if fake.shape[-2:] != reference.shape[-2:]:
                # Compare at the originals' resolution, as FID tools resize both sets to one size.
                fake = torch.nn.functional.interpolate(
                    fake, size=reference.shape[-2:], mode="bilinear", align_corners=False, antialias=True
                )
            features = EvaluatorFeatures(suite.evaluator)
            scores["fid"] = frechet_distance(reference, fake, features, batch_size=config.batch_size * 4)
            if external is not None:
                scores["fid_external"] = frechet_distance(
                    reference, fake, external, batch_size=config.batch_size
                )
        if "is" in metrics:
            mean, std = inception_score(images, EvaluatorClassLogits(suite.evaluator), seed=config.seed)
            scores["is"], scores["is_std"] = mean, std
        if "r-precision" in metrics:
            rp = r_precision(
                suite.matcher,
                images,
                captions,
                scenes,
                seed=config.seed,
                easy_negatives=config.easy_negatives,
                hard_count=config.hard_negatives,
            )
            scores.update({f"rprec_{k}": v for k, v in rp.items()})
        if "semantic" in metrics:
            sem = semantic_accuracy(suite.matcher, images, captions, scenes, seed=config.seed)
            scores.update({f"semantic_{k}": v for k, v in sem.items()})
        if "facts" in metrics:
            scores.update(fact_scores(suite.evaluator, images, captions))
    return scores


# ---------------------------------------------------------------------- painting, with a cache
def _settings_key(config: EvaluationConfig, examples: Sequence[EvalExample], captions: Sequence[str]) -> dict:
    digest = hashlib.sha256(
        json.dumps([[ex.image_id for ex in examples], list(captions)]).encode()
    ).hexdigest()
    return {
        "split": config.split,
        "sampler": config.sampler,
        "steps": config.steps,
        "temperature": config.temperature,
        "anneal": config.anneal,
        "guidance_scale": config.guidance_scale,
        "seed": config.seed,
        "captions": digest[:16],
    }


def _model_stamp(model_dir: Path) -> str:
    """Changes whenever a component of the model folder is rewritten (cached images go stale)."""
    h = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            h.update(f"{path.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached_images(
    folder: Path, ids: Sequence[int], key: dict, make: Callable[[], list[Image.Image]]
) -> list[Image.Image]:
    """Images ``folder/<id>.png`` made by ``make()`` unless cached with the same settings ``key``."""
    meta = folder / "settings.json"
    if (
        meta.is_file()
        and json.loads(meta.read_text()) == key
        and all((folder / f"{i}.png").is_file() for i in ids)
    ):
        return [load_image(folder / f"{i}.png") for i in ids]
    images = make()
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in zip(ids, images):
        img.save(folder / f"{i}.png")
    meta.write_text(json.dumps(key, indent=2) + "\n")
    return images


def _sampler(config: EvaluationConfig):
    """The evaluation's sampler, exactly as configured (not merged with a model's own settings)."""
    from xlxmert.sampling.visual import SamplerConfig

    return SamplerConfig(config.sampler, config.steps, config.temperature, config.anneal).build()


def _paint(
    pipe, captions: Sequence[str], config: EvaluationConfig, progress: bool, desc: str
) -> list[Image.Image]:
    images: list[Image.Image] = []
    sampler = _sampler(config)
    for s in tqdm(range(0, len(captions), config.batch_size), desc=desc, disable=not progress):
        out = pipe(
            list(captions[s : s + config.batch_size]),
            sampler=sampler,
            seed=config.seed,
            guidance_scale=config.guidance_scale,
        )
        images.extend(out.images)
    return images


def _paint_empty_caption(pipe, n: int, config: EvaluationConfig) -> list[Image.Image]:
    """The empty-caption control: the transformer reads only ``[CLS] [SEP]``.

    Painted with the same sampler settings as the models' rows; one image (the first item's draws),
    repeated: the control measures what the caption-free prediction paints, at one image's cost.
    """
    out = pipe([""], sampler=_sampler(config), seed=config.seed, allow_empty=True)
    return out.images * n


def _reconstruct(
    model_dir: Path, pipe, originals: Sequence[Image.Image], config: EvaluationConfig, progress: bool
) -> list[Image.Image]:
    """The model's generator painting the visual words of the original images (its ceiling)."""
    from xlxmert.pipelines.common import ImageEncoder

    encoder = ImageEncoder.from_pretrained(model_dir, pipe.transformer.config.grid_size)
    images: list[Image.Image] = []
    for s in tqdm(range(0, len(originals), config.batch_size), desc="reconstruct", disable=not progress):
        feats, ids = encoder(list(originals[s : s + config.batch_size]))
        images.extend(pipe.decode(feats if pipe.paints_features else ids, config.seed))
    return images


def _qa_answer_fn(model_dir: Path, task: str, device: str = "cpu"):
    """The task's fine-tuned head when the folder has one, else its default answerer."""
    from xlxmert.models.heads import available_heads
    from xlxmert.pipelines import AnswerPipeline

    head = task if task in available_heads(model_dir) else None
    pipe = AnswerPipeline.from_pretrained(model_dir, head=head).to(device)
    return lambda images, questions: pipe(images, questions).answers


def _task_scores(
    model_dir: Path,
    data_root: Path,
    examples: Sequence[EvalExample],
    metrics: Sequence[str],
    config: EvaluationConfig,
    progress: bool,
) -> dict[str, Any]:
    """Task accuracies of one model (on the split's own questions/statements, first n of each)."""
    scores: dict[str, Any] = {}
    for task, metric, key in (("vqa", vqa_score, "score"), ("gqa", gqa_accuracy, "accuracy")):
        if task not in metrics:
            continue
        try:
            answer = _qa_answer_fn(model_dir, task, config.device)
        except XLXMERTError as exc:
            scores["qa_note"] = str(exc)
            continue
        scores[task] = metric(data_root, config.split, answer, config.n, progress=progress)[key]
    if any(t in metrics for t in ("vqa", "gqa", "nlvr2")):
        scores.update(understanding_baselines(data_root, config.split, config.n))
    if "nlvr2" in metrics:
        judge = _nlvr2_judge_fn(model_dir, config.device)
        if judge is None:
            scores["nlvr2_note"] = "no NLVR2 head in this model folder (fine-tune it first)"
        else:
            scores["nlvr2"] = nlvr2_accuracy(data_root, config.split, judge, config.n, progress=progress)[
                "accuracy"
            ]
    if "captioning" in metrics:  # the shipped decoder (CaptionPipeline's defaults)
        from xlxmert.evaluation.metrics.captions import caption_metrics
        from xlxmert.pipelines import CaptionPipeline

        pipe = CaptionPipeline.from_pretrained(model_dir).to(config.device)
        captions: list[str] = []
        for s in tqdm(range(0, len(examples), config.batch_size), desc="caption", disable=not progress):
            chunk = examples[s : s + config.batch_size]
            captions.extend(pipe([load_image(ex.path) for ex in chunk], seed=config.seed).captions)
        cc = caption_metrics(captions, [list(ex.captions) for ex in examples], [ex.scene for ex in examples])
        scores["caption_facts_true"], scores["caption_all_true"] = cc["facts_true"], cc["all_true"]
        scores["caption_bleu4"], scores["caption_cider_d"] = cc["bleu4"], cc["cider_d"]
        scores["caption_examples"] = captions[: config.figure_rows]
    return scores


def _nlvr2_judge_fn(model_dir: Path, device: str = "cpu"):
    """A fine-tuned NLVR2 judge when the model folder has one; None until fine-tuning exists."""
    try:
        from xlxmert.pipelines import NLVR2Pipeline  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return None
    try:
        pipe = NLVR2Pipeline.from_pretrained(model_dir).to(device)
    except XLXMERTError:
        return None
    return lambda left, right, sentences: pipe(left, right, sentences).labels


# ---------------------------------------------------------------------- the whole table
def _model_name(model_dir: Path, taken: set[str]) -> str:
    name = model_dir.resolve().name or "model"
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def evaluate(
    models: Sequence[str | Path],
    data_root: str | Path,
    evaluation_dir: str | Path,
    out: str | Path,
    config: EvaluationConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score original images, each model, its reconstructions and the controls; write the report.

    Writes ``out/results.json``, ``out/table.md`` and ``out/figure.png`` and returns the results.
    """
    config = config or EvaluationConfig()
    data_root, out = Path(data_root), Path(out)
    suite = EvaluationSuite.from_pretrained(evaluation_dir)
    external = load_feature_network(config.feature_network) if config.feature_network else None
    examples = load_examples(data_root, config.split, config.n)
    if len(examples) < 2:
        raise XLXMERTError("evaluation needs at least 2 images (FID and R-precision compare images)")
    captions = choose_captions(examples, config.seed)
    scenes = [ex.scene for ex in examples]
    ids = [ex.image_id for ex in examples]
    originals = [load_image(ex.path) for ex in examples]
    original_tensor = stack_images(originals)
    image_metrics = [m for m in config.metrics if m in IMAGE_METRICS]
    fingerprint = suite.fingerprint()
    key = _settings_key(config, examples, captions)
    score_key = {
        "feature_network": config.feature_network,
        **key,
        "evaluation": fingerprint,
        "version": SCORES_VERSION,
        "n": len(examples),
        "metrics": list(config.metrics),
        "negatives": [config.easy_negatives, config.hard_negatives],
    }

    def cached_scores(
        folder: Path, compute: Callable[[], dict[str, Any]], model_stamp: str | None = None
    ) -> dict[str, Any]:
        path = folder / "scores.json"
        full_key = {**score_key, "model": model_stamp}
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("key") == full_key:
                return data["rows"]
        rows = compute()
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": full_key, "rows": rows}, indent=2) + "\n")
        return rows

    def score(
        images: list[Image.Image] | torch.Tensor, caps, scs, reference=original_tensor
    ) -> dict[str, Any]:
        tensor = images if isinstance(images, torch.Tensor) else stack_images(images)
        return score_images(suite, tensor, caps, scs, reference, image_metrics, config, external)

    rotated = list(range(1, len(examples))) + [0]

    def original_rows() -> dict[str, Any]:
        acc = evaluator_accuracy(suite.evaluator, list(examples))
        return {
            "original": {
                **score(original_tensor, captions, scenes, reference=None),
                "evaluator_accuracy": acc,
            },
            "mismatched": score(
                original_tensor, [captions[j] for j in rotated], [scenes[j] for j in rotated], reference=None
            ),
        }

    rows: list[dict[str, Any]] = []
    base = cached_scores(out / "original", original_rows)
    rows.append({"name": "Original images", "kind": "original", "scores": base["original"]})
    figure_columns: list[tuple[str, list[Image.Image]]] = []
    taken: set[str] = set()
    for model_dir in map(Path, models):
        name = _model_name(model_dir, taken)
        folder = out / "models" / name
        state: dict[str, Any] = {}
        model_key = {**key, "model": _model_stamp(model_dir)}

        def pipeline(model_dir: Path = model_dir, state: dict = state):
            if "pipe" not in state:
                from xlxmert.pipelines import PaintPipeline

                state["pipe"] = PaintPipeline.from_pretrained(model_dir).to(config.device)
            return state["pipe"]

        generated = _cached_images(
            folder / "generated",
            ids,
            model_key,
            lambda name=name: _paint(pipeline(), captions, config, progress, f"paint {name}"),
        )
        reconstruction = _cached_images(
            folder / "reconstruction",
            ids,
            model_key,
            lambda md=model_dir: _reconstruct(md, pipeline(), originals, config, progress),
        )
        empty = _cached_images(
            folder / "empty", ids, model_key, lambda: _paint_empty_caption(pipeline(), len(ids), config)
        )

        def model_rows(
            model_dir: Path = model_dir, generated=generated, reconstruction=reconstruction, empty=empty
        ) -> dict[str, Any]:
            return {
                "model": {
                    **score(generated, captions, scenes),
                    **_task_scores(model_dir, data_root, examples, config.metrics, config, progress),
                },
                "reconstruction": score(reconstruction, captions, scenes),
                "empty": score(empty, captions, scenes),
            }

        scores = cached_scores(folder, model_rows, model_key["model"])
        rows.append(
            {
                "name": f"X-LXMERT ({name})",
                "kind": "model",
                "model": str(model_dir),
                "scores": scores["model"],
            }
        )
        rows.append(
            {
                "name": f"Reconstruction from ground-truth ids ({name})",
                "kind": "reconstruction",
                "model": str(model_dir),
                "scores": scores["reconstruction"],
            }
        )
        rows.append(
            {
                "name": f"Control: empty caption ({name})",
                "kind": "control-empty",
                "model": str(model_dir),
                "scores": scores["empty"],
            }
        )
        figure_columns.append((name, generated))
        if len(figure_columns) == 1:
            figure_columns.insert(0, ("reconstruction", reconstruction))
    rows.append(
        {
            "name": "Control: original, other image's caption",
            "kind": "control-mismatched",
            "scores": base["mismatched"],
        }
    )
    results = {
        "config": dataclasses.asdict(config),
        "data": str(data_root),
        "evaluation": str(evaluation_dir),
        "evaluation_fingerprint": fingerprint,
        "num_images": len(examples),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(markdown_report(results))
    figure = comparison_figure(
        captions[: config.figure_rows],
        originals[: config.figure_rows],
        [(n, imgs[: config.figure_rows]) for n, imgs in figure_columns],
    )
    figure.save(out / "figure.png")
    return results


def _mean_scores(values: Sequence[Any]) -> Any:
    """The mean of numbers (None when any is None), dicts key by key; anything else: the first."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _mean_scores([v.get(k) for v in values]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
            return None
        return sum(values) / len(values)
    return first


# Scores compared with the original images' (a painted image is as good as the original when 1.0).
def average_results(per_seed: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One result of several :func:`evaluate` runs that differ only in their seed.

    Scores are averaged row by row; each row also gets ``relative`` (the mean over seeds of its
    score / the original images' score, which is how the quality bar is read) and
    ``relative_range`` (the lowest and highest of those per-seed ratios).
    """
    if len(per_seed) != len(seeds) or not per_seed:
        raise XLXMERTError("average_results: one result per seed is needed")
    names = [[row["name"] for row in res["rows"]] for res in per_seed]
    if any(n != names[0] for n in names):
        raise XLXMERTError("average_results: the evaluations have different rows")
    ratios = [relative_scores(res["rows"]) for res in per_seed]
    rows = []
    for i, row in enumerate(per_seed[0]["rows"]):
        merged = {**row, "scores": _mean_scores([res["rows"][i]["scores"] for res in per_seed])}
        if ratios[0]:
            per_key = {key: [r[i][key] for r in ratios] for _, key in RELATIVE_KEYS}
            merged["relative"] = {k: _mean_scores(v) for k, v in per_key.items()}
            merged["relative_range"] = {
                k: None if None in v else [min(v), max(v)] for k, v in per_key.items()
            }
        rows.append(merged)
    return {**per_seed[0], "seeds": list(seeds), "rows": rows}


def evaluate_seeds(
    models: Sequence[str | Path],
    data_root: str | Path,
    evaluation_dir: str | Path,
    out: str | Path,
    config: EvaluationConfig,
    seeds: Sequence[int],
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`evaluate` once per seed (captions, sampling and negatives all drawn with it) into
    ``out/seed-<S>/``, then their mean (:func:`average_results`) into ``out/results.json`` and
    ``out/table.md``. Each seed's images and scores stay cached in its own folder."""
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise XLXMERTError(f"averaging needs at least two different seeds, got {list(seeds)}")
    out = Path(out)
    per_seed = []
    for seed in seeds:
        config_s = dataclasses.replace(config, seed=seed)
        per_seed.append(evaluate(models, data_root, evaluation_dir, out / f"seed-{seed}", config_s, progress))
    results = average_results(per_seed, seeds)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(markdown_report(results))
    return results
