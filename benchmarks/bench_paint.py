"""Paint latency (batch 1) and throughput (batch 64) per sampler, with and without the text cache.

Models have random weights (speed does not depend on them): the ``shapes-64`` and ``paper``
presets of the transformer and generator at the visual sizes of the model each preset builds
(``training.train_all.visual_sizes``: shapes-64 is the shipped model's 8×8 grid), both variants
(X-LXMERT ids + CCC; LXMERT+Grid features + regression), in one run.

Every sampling step is one full forward of the vision and cross-modality layers, whichever the
sampler, so a paint costs ``text + steps × step + decode`` (with the cache the language layers run
once in ``text``; without it they run inside every ``step``). The script times those three parts
(median of ``--repeats``), then for each sampler runs the real pipeline end to end when the
estimate fits ``--full-budget`` seconds (``measured``), and otherwise reports the estimate
(``est``): 64-step samplers at batch 64 on the paper preset take minutes per run on a CPU.

    python benchmarks/bench_paint.py                      # both presets, a few minutes
    python benchmarks/bench_paint.py --presets shapes-64 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.models.generator import GeneratorConfig, SpadeGenerator
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining
from xlxmert.pipelines.paint import PaintPipeline
from xlxmert.sampling import get_sampler
from xlxmert.training.train_all import visual_sizes
from xlxmert.visual.vocabulary import VisualVocabulary

CAPTIONS = [
    "a red circle to the left of a blue square",
    "two green stars and a yellow diamond at night",
    "a large red circle and a small red circle in the snow",
    "three shapes on the sand",
]
SAMPLERS = [("mask-predict", 4), ("tl-br", None), ("easy-first", None), ("random", None), ("random", 200)]


def build(preset: str, variant: str, tokenizer: TextTokenizer) -> PaintPipeline:
    sizes = visual_sizes(preset)  # as the model the preset builds (shapes-64: the shipped one)
    config = XLxmertConfig.from_preset(
        preset, variant=variant, visual_target="clusters" if variant == "x-lxmert" else "regression", **sizes
    )
    config = dataclasses.replace(config, vocab_size=max(config.vocab_size, tokenizer.vocab_size))
    centroids = torch.randn(sizes["num_clusters"], sizes["feature_dim"])
    model = XLxmertForPreTraining(config, centroids)
    gen_config = GeneratorConfig.from_preset(
        preset, input_dim=sizes["feature_dim"], grid_size=sizes["grid_size"]
    )
    generator = SpadeGenerator(gen_config)
    return PaintPipeline(tokenizer, model, VisualVocabulary(centroids), generator)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def parts(pipe: PaintPipeline, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of: text encoding, one cached step, one naive step, generator decode."""
    cfg = pipe.transformer.config
    model = pipe.transformer
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    tokens = pipe.tokenizer(captions, max_length=cfg.max_text_length)
    encoding = model.encode_text(tokens.input_ids, tokens.attention_mask)
    mask = torch.zeros(batch, cfg.num_cells, dtype=torch.bool)
    mask[:, ::2] = True
    if pipe.paints_features:
        visual = {"visual_feats": torch.randn(batch, cfg.num_cells, cfg.feature_dim)}
    else:
        visual = {"visual_ids": torch.randint(0, cfg.num_clusters, (batch, cfg.num_cells))}
    values = visual.get("visual_feats", visual.get("visual_ids"))
    ids, attn = tokens.input_ids, tokens.attention_mask
    return {
        "text": median_time(lambda: model.encode_text(ids, attn), repeats),
        "step_cached": median_time(
            lambda: model(None, None, text_encoding=encoding, visual_mask=mask, **visual), repeats
        ),
        "step_naive": median_time(lambda: model(ids, attn, visual_mask=mask, **visual), repeats),
        "decode": median_time(lambda: pipe.decode(values), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["shapes-64", "paper"])
    parser.add_argument("--variants", nargs="+", default=["x-lxmert", "lxmert-grid"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--full-budget", type=float, default=10.0, help="seconds allowed for one end-to-end run"
    )
    parser.add_argument(
        "--probe-batch",
        type=int,
        default=8,
        help="paper preset: time the parts at this batch and scale linearly to larger batches",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = TextTokenizer.train(CAPTIONS * 4, vocab_size=200)
    print(f"torch {torch.__version__}, {args.threads} thread(s), repeats {args.repeats} (median)")
    print("| preset | variant | sampler | steps | cache | batch | latency s | images/s | source |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for variant in args.variants:
            pipe = build(preset, variant, tokenizer)
            m = pipe.transformer.config.num_cells
            for batch in args.batches:
                # A paper-size step at batch 64 takes about a minute on a CPU: time a smaller batch
                # and scale (cost is linear in the batch at a fixed sequence length).
                probe = min(batch, args.probe_batch) if preset == "paper" else batch
                p = {
                    k: v * batch / probe
                    for k, v in parts(pipe, probe, args.repeats if probe == 1 else 1).items()
                }
                scaled = f" (b{probe}×{batch // probe})" if probe != batch else ""
                captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
                for name, steps in SAMPLERS:
                    n = get_sampler(name, steps=steps).num_steps(m)
                    for cache in (True, False):
                        est = (p["text"] + n * p["step_cached"] if cache else n * p["step_naive"]) + p[
                            "decode"
                        ]
                        if est <= args.full_budget:
                            seconds = median_time(
                                lambda: pipe(captions, sampler=name, steps=steps, use_text_cache=cache),  # noqa: B023
                                args.repeats if est * args.repeats <= args.full_budget else 1,
                            )
                            source = "measured"
                        else:
                            seconds, source = est, "est" + scaled
                        print(
                            f"| {preset} | {variant} | {name} | {n} | {'yes' if cache else 'no'} | {batch} "
                            f"| {seconds:.3f} | {batch / seconds:.2f} | {source} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
