"""Generator training and inference throughput on this CPU (issue 5's benchmark).

For output sizes 64 / 128 / 256 (``--preset``'s generator widths, 8×8 grid → 3 / 4 / 5 blocks) it times
one full GAN step (G forward, one D pass over real+fake, perceptual loss, both backward passes, both
Adam steps) and a noise-free inference pass, in three modes: fp32 NCHW, fp32 channels-last, bf16
autocast + channels-last. Each number is the median of ``--repeats`` timed runs after a warm-up.
It also runs a few training steps from the same initialisation in fp32 and in bf16 and prints the
loss trajectories, to show whether bf16 holds up.

The perceptual network is a randomly initialised ShapeScenes backbone (same cost as a trained
one); ``--perceptual resnet50`` uses a random ResNet-50 instead (real-image training).

    python benchmarks/bench_generator.py                   # all sizes, ~3 minutes on 2 cores
    python benchmarks/bench_generator.py --sizes 64 --threads 2
    python benchmarks/bench_generator.py --preset shapes-64 --sizes 64   # the shipped model's sizes
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from xlxmert.models.generator import (
    Discriminator,
    DiscriminatorConfig,
    GeneratorConfig,
    SpadeGenerator,
    features_from_ids,
)
from xlxmert.training.generator import GeneratorTrainConfig, PerceptualLoss, _GanStep
from xlxmert.training.train_all import visual_sizes

MODES = {  # name: (bf16, channels_last)
    "fp32": (False, False),
    "fp32+cl": (False, True),
    "bf16+cl": (True, True),
}


def _perceptual(kind: str) -> torch.nn.Module:
    if kind == "resnet50":
        from transformers import ResNetConfig

        from xlxmert.visual.backbones import ResNetBackbone

        return ResNetBackbone.from_config(ResNetConfig())
    from xlxmert.visual.backbones import ShapesBackbone, ShapesBackboneConfig

    return ShapesBackbone(ShapesBackboneConfig.from_preset("shapes-64"))


def _setup(size: int, args, bf16: bool, channels_last: bool, seed: int = 0):
    from accelerate import Accelerator

    torch.manual_seed(seed)
    g_cfg = GeneratorConfig.from_preset(
        args.preset, input_dim=args.dim, grid_size=args.grid, output_size=size, bottleneck_dim=args.bottleneck
    )
    centroids = torch.randn(args.k, args.dim)
    g = SpadeGenerator(g_cfg)
    d = Discriminator(DiscriminatorConfig.for_generator(g_cfg, args.k), centroids)
    perceptual = PerceptualLoss(_perceptual(args.perceptual))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in (g, d, perceptual):
        m.to(memory_format=fmt)
    cfg = GeneratorTrainConfig(output_size=size, bf16=bf16, channels_last=channels_last)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_generator, betas=(0.0, 0.999), eps=cfg.eps)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_discriminator, betas=(0.0, 0.999), eps=cfg.eps)
    acc = Accelerator(cpu=True)
    g, d, opt_g, opt_d = acc.prepare(g, d, opt_g, opt_d)
    step = _GanStep(g, d, perceptual, opt_g, opt_d, cfg, acc)
    b = args.batch_size
    ids = torch.randint(0, args.k, (b, args.grid**2))
    feats = features_from_ids(ids, centroids, args.grid).contiguous(memory_format=fmt)
    real = (torch.rand(b, 3, size, size) * 2 - 1).contiguous(memory_format=fmt)
    return g, step, real, feats, ids


def _median_rate(fn, images: int, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN kernel selection)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return images / statistics.median(times)


def bench_mode(size: int, args, bf16: bool, channels_last: bool) -> tuple[float, float]:
    """(training, inference) images/s for one size and mode."""
    g, step, real, feats, ids = _setup(size, args, bf16, channels_last)
    rng = torch.Generator().manual_seed(0)
    train_rate = _median_rate(lambda: step(real, feats, ids, rng), args.batch_size, args.repeats)
    g.eval()

    @torch.no_grad()
    def infer():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            g(feats, noise=False)

    return train_rate, _median_rate(infer, args.batch_size, args.repeats)


def bench_size(size: int, args) -> dict[str, tuple[float, float]]:
    out = {}
    for mode, (bf16, channels_last) in MODES.items():
        train_rate, infer_rate = out[mode] = bench_mode(size, args, bf16, channels_last)
        print(
            f"  {size:>3} px  {mode:<8} train {train_rate:7.2f} img/s   inference {infer_rate:7.2f} img/s",
            flush=True,
        )
    return out


def bf16_drift(args, size: int = 64, steps: int = 6) -> None:
    """Same init, same batch: per-step losses in fp32 and bf16."""
    runs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        _, step, real, feats, ids = _setup(size, args, bf16, True)
        rng = torch.Generator().manual_seed(0)
        runs[name] = [step(real, feats, ids, rng) for _ in range(steps)]
    print(f"bf16 vs fp32 at {size} px, {steps} steps on one batch (same init):")
    for key in ("loss_g", "perceptual", "feature_matching", "loss_d"):
        a = [h[key] for h in runs["fp32"]]
        b = [h[key] for h in runs["bf16"]]
        rel = max(abs(x - y) / max(abs(x), 1e-8) for x, y in zip(a, b))
        print(
            f"  {key:<17} fp32 {a[0]:.4f}→{a[-1]:.4f}  bf16 {b[0]:.4f}→{b[-1]:.4f}  max rel. diff {rel:.2%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--preset",
        choices=("paper", "shapes-64"),
        default="paper",
        help="generator widths, and the defaults of N, D, K (training.train_all.visual_sizes)",
    )
    parser.add_argument("--grid", type=int, default=None, help="grid size N (default: the preset's)")
    parser.add_argument(
        "--dim", type=int, default=None, help="visual-word feature size D (default: the preset's)"
    )
    parser.add_argument(
        "--bottleneck", type=int, default=None, help="generator bottleneck width (default: the preset's)"
    )
    parser.add_argument(
        "--k", type=int, default=None, help="vocabulary size K, D's cluster head (default: the preset's)"
    )
    parser.add_argument("--perceptual", choices=("shapes", "resnet50"), default="shapes")
    parser.add_argument("--no-drift", action="store_true", help="skip the fp32-vs-bf16 loss comparison")
    args = parser.parse_args()
    sizes = visual_sizes(args.preset)
    args.grid = args.grid or sizes["grid_size"]
    args.dim = args.dim or sizes["feature_dim"]
    args.k = args.k or sizes["num_clusters"]
    args.bottleneck = args.bottleneck or GeneratorConfig.from_preset(args.preset).bottleneck_dim
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, "
        f"median of {args.repeats}, grid {args.grid}, D {args.dim}, K {args.k}, perceptual={args.perceptual}"
    )
    for size in args.sizes:
        bench_size(size, args)
    if not args.no_drift:
        bf16_drift(args)


if __name__ == "__main__":
    main()
