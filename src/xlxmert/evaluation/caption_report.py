"""The caption report (``xlxmert evaluate-captions``): captions of a test split by the default
decoder, the paper's Gibbs sampler, the chance control and a held-out reference, scored with
:mod:`xlxmert.evaluation.metrics.captions` per seed, their mean written as JSON and a Markdown table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from xlxmert.data.images import load_image
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.metrics.captions import bleu_cider, caption_metrics, other_image_references
from xlxmert.evaluation.split import load_examples

METRIC_COLUMNS = (
    ("BLEU-4↑", "bleu4"),
    ("CIDEr-D↑", "cider_d"),
    ("facts true↑", "facts_true"),
    ("all facts true↑", "all_true"),
    ("outside grammar↓", "outside_grammar"),
    ("repeated word↓", "repeated_word"),
    ("dangling article↓", "dangling_article"),
    ("2 objects named↑", "two_objects_named"),
)


def generate_captions(
    pipe, examples, sampler: str, length: int | str, seed: int, batch_size: int = 16, progress: bool = False
) -> list[str]:
    """One caption per example's image from a :class:`~xlxmert.pipelines.CaptionPipeline`."""
    out: list[str] = []
    for s in tqdm(range(0, len(examples), batch_size), desc=f"caption ({sampler})", disable=not progress):
        chunk = examples[s : s + batch_size]
        images = [load_image(ex.path) for ex in chunk]
        out += pipe(images, sampler=sampler, length=length, seed=seed).captions
    return out


def evaluate_captions(
    model_dir,
    data_root,
    out_dir,
    split: str = "test",
    n: int | None = 1000,
    seeds: Sequence[int] = (0,),
    gibbs_length: int | str = 12,
    batch_size: int = 16,
    progress: bool = False,
) -> dict:
    """Caption metrics of the default decoder, the Gibbs sampler (at ``gibbs_length``), the chance
    control (a reference caption of another image) and a reference caption against the other four,
    per seed and their mean; writes ``OUT/results.json``, ``OUT/table.md`` and ``OUT/captions.json``.

    Argmax mask-predict draws nothing from the seed, so one decoding serves every seed."""
    from xlxmert.pipelines.caption import CaptionPipeline

    examples = load_examples(data_root, split, n)
    if len(examples) < 2:
        raise XLXMERTError(f"the {split} split of {data_root} has {len(examples)} images; need at least 2")
    refs = [list(ex.captions) for ex in examples]
    scenes = [ex.scene for ex in examples]
    pipe = CaptionPipeline.from_pretrained(model_dir)
    default = generate_captions(pipe, examples, "mask-predict", "auto", seeds[0], batch_size, progress)
    rows = {
        "X-LXMERT, mask-predict, length auto (default)": lambda seed: default,
        f"X-LXMERT, Gibbs (paper), length {gibbs_length}": lambda seed: generate_captions(
            pipe, examples, "gibbs", gibbs_length, seed, batch_size, progress
        ),
        "Control: a reference caption of another image (chance)": lambda seed: other_image_references(
            refs, seed
        ),
    }
    per_seed: dict[str, list[dict]] = {name: [] for name in rows}
    captions: dict[str, dict[int, list[str]]] = {name: {} for name in rows}
    for seed in seeds:
        for name, make in rows.items():
            caps = make(seed)
            captions[name][seed] = caps
            per_seed[name].append(caption_metrics(caps, refs, scenes))
    held_out = [r[0] for r in refs]
    loo = {**caption_metrics(held_out, refs, scenes), **bleu_cider(held_out, [r[1:] for r in refs])}
    results = {
        "split": split,
        "n": len(examples),
        "seeds": list(seeds),
        "rows": {name: {"mean": _mean(runs), "seeds": runs} for name, runs in per_seed.items()}
        | {"Reference: the first of the five, against the other four": {"mean": loo, "seeds": [loo]}},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "captions.json").write_text(
        json.dumps({name: {str(s): c for s, c in by_seed.items()} for name, by_seed in captions.items()})
    )
    (out / "table.md").write_text(caption_table(results))
    return results


def _mean(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], float)]
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in keys}
    return (
        mean
        | {f"{k}_range": [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys}
        | {k: runs[0][k] for k in runs[0] if k not in keys}
    )


def caption_table(results: dict) -> str:
    """A Markdown table of ``results`` (the mean over the seeds)."""
    head = f"Captions on `{results['split']}`, {results['n']} images, seeds {results['seeds']} (mean)\n\n"
    lines = ["| row | " + " | ".join(h for h, _ in METRIC_COLUMNS) + " |"]
    lines.append("|---|" + "---:|" * len(METRIC_COLUMNS))
    for name, row in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row['mean'][k]:.3f}" for _, k in METRIC_COLUMNS) + " |")
    return head + "\n".join(lines) + "\n"
