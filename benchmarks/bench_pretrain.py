"""Samples/s of one pretraining step (forward, backward, clip, AdamW) for the transformer presets.

Each task of the cycle (visual masking + CCC, word masking + MLM, matching + ITM) is timed, fp32
and bf16 autocast, median of ``--repeats`` timed steps after ``--warmup`` untimed ones. Synthetic
inputs of the preset's sizes (random ids, random centroids; the visual sizes from
``training.train_all.visual_sizes``): the numbers measure the model, not the data pipeline.

    python benchmarks/bench_pretrain.py --presets shapes-64 paper --batch-size 32 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from xlxmert.models.masking import mask_text_tokens, uniform_visual_mask
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining
from xlxmert.training.train_all import visual_sizes


def step_time(model, optimizer, batch, task: str, dtype: torch.dtype | None) -> float:
    ids, mask, vids, vmask, mlm_ids, mlm_labels = batch
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        if task == "visual":
            out = model(ids, mask, visual_ids=vids, visual_mask=vmask)
            loss = F.cross_entropy(out.visual_logits.float()[vmask], vids[vmask])
        elif task == "text":
            out = model(mlm_ids, mask, visual_ids=vids)
            loss = F.cross_entropy(
                out.mlm_logits.float().flatten(0, 1), mlm_labels.flatten(), ignore_index=-100
            )
        else:
            out = model(ids, mask, visual_ids=vids)
            loss = F.cross_entropy(out.itm_logits.float(), torch.ones(len(ids), dtype=torch.long))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - start


def bench(
    preset: str, batch_size: int, warmup: int, repeats: int, **overrides: int
) -> list[tuple[str, str, float]]:
    cfg = XLxmertConfig.from_preset(preset, **overrides)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = XLxmertForPreTraining(cfg, torch.randn(cfg.num_clusters, cfg.feature_dim, generator=g)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999))
    L = cfg.max_text_length
    ids = torch.randint(5, cfg.vocab_size, (batch_size, L), generator=g)
    ids[:, 0], ids[:, 12] = 2, 3
    ids[:, 13:] = 0
    mask = (ids != 0).long()
    vids = torch.randint(0, cfg.num_clusters, (batch_size, cfg.num_cells), generator=g)
    vmask = uniform_visual_mask(batch_size, cfg.num_cells, g)
    mlm_ids, mlm_labels = mask_text_tokens(ids, mask, {0, 1, 2, 3, 4}, cfg.vocab_size, 4, g)
    batch = (ids, mask, vids, vmask, mlm_ids, mlm_labels)
    rows = []
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for _ in range(warmup):
            step_time(model, optimizer, batch, "visual", dtype)
        times = [
            step_time(model, optimizer, batch, ("visual", "text", "match")[i % 3], dtype)
            for i in range(repeats)
        ]
        rows.append((preset, label, batch_size / statistics.median(times)))
    print(f"{preset}: {model.num_parameters() / 1e6:.1f}M trainable parameters", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["shapes-64", "paper"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--paper-batch-size", type=int, default=8, help="smaller batch for the paper preset")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--shapes-sizes",
        default=None,
        help="grid_size=N,num_clusters=K,feature_dim=D for shapes-64 (default: the shipped model's, "
        "training.train_all.visual_sizes)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'preset':<10} {'precision':<9} {'samples/s':>10}")
    for preset in args.presets:
        bs = args.paper_batch_size if preset == "paper" else args.batch_size
        overrides = visual_sizes(preset)  # the data decide these (shapes-64: the shipped model's)
        if preset != "paper" and args.shapes_sizes:
            overrides |= {k: int(v) for k, v in (kv.split("=") for kv in args.shapes_sizes.split(","))}
        for name, label, rate in bench(preset, bs, args.warmup, args.repeats, **overrides):
            print(f"{name:<10} {label:<9} {rate:>10.2f}  (batch {bs})", flush=True)


if __name__ == "__main__":
    main()
