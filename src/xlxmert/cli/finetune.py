"""``xlxmert finetune``: fine-tune a model folder on VQA v2, GQA or NLVR2 (a task head + the transformer).

xlxmert finetune --task vqa|gqa|nlvr2 --model MODEL_DIR --data DATA --out OUT [--from-scratch]
"""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_quiet


def _finetune(args: argparse.Namespace) -> int:
    from xlxmert.training.finetune import FinetuneConfig, finetune, with_overrides

    config = with_overrides(
        FinetuneConfig(task=args.task),
        train_split=args.train_split,
        val_split=args.val_split,
        test_split=args.test_split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        warmup_ratio=args.warmup_ratio,
        seed=args.seed,
        from_scratch=args.from_scratch or None,
        max_train=args.max_train,
        max_eval=args.max_eval,
        answer_min_count=args.answer_min_count,
        mixed_precision="bf16" if args.bf16 else None,
        checkpoint_every=args.checkpoint_every,
    )
    report = finetune(
        args.model,
        args.data,
        args.out,
        config,
        answers_file=args.answers,
        progress=not args.quiet,
        stop_after=args.stop_after,
    )
    if "stopped_at" in report:
        print(f"stopped after {report['stopped_at']} updates; rerun the same command to resume")
        return 0
    key = "score" if args.task == "vqa" else "accuracy"
    for split in ("val", "test"):
        if split in report:
            r = report[split]
            extra = f", consistency {r['consistency']:.4f}" if "consistency" in r else ""
            base = r["baselines"]
            print(
                f"{split}: {args.task} {key} {r[key]:.4f}{extra} (n={r['n']}); majority answer "
                f"{base['majority_answer']:.4f}, question only {base['question_only']:.4f}"
            )
    print(f"wrote {args.out}/heads/{args.task}/ (report.json has the breakdowns)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune on VQA v2, GQA or NLVR2 (writes a model folder with heads/TASK/)",
        description="Fine-tune MODEL_DIR's transformer with a task head on DATA (ShapeScenes or the "
        "official VQA v2 / GQA / NLVR2 files) and write OUT: a copy of the model folder with "
        "heads/TASK/. Rerun the same command to resume after an interruption.",
    )
    p.add_argument("--task", required=True, choices=("vqa", "gqa", "nlvr2"))
    p.add_argument("--model", required=True, help="pretrained model folder (with transformer/)")
    p.add_argument("--data", required=True, help="data root (DATA/SPLIT/... or the official files)")
    p.add_argument("--out", required=True, help="output model folder (may equal --model)")
    p.add_argument("--from-scratch", action="store_true", help="control: same architecture, random init")
    p.add_argument("--train-split", help="default train")
    p.add_argument("--val-split", help="validated after each epoch; the best epoch is kept (default val)")
    p.add_argument("--test-split", help="also score the best epoch on this split")
    p.add_argument("--epochs", type=int, help="default 3")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--lr", type=float, help="the transformer's learning rate (default 5e-5)")
    p.add_argument("--head-lr", type=float, help="the task head's learning rate (default 5e-4, paper C.6)")
    p.add_argument("--warmup-ratio", type=float, help="share of updates in linear warm-up (default 0.1)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--max-train", type=int, help="use the first N training examples")
    p.add_argument("--max-eval", type=int, help="use the first N validation / test examples")
    p.add_argument(
        "--answers", help="answer vocabulary (JSON list) for VQA/GQA; default: the training answers"
    )
    p.add_argument("--answer-min-count", type=int, help="default 1 (the paper's VQA vocabulary: 9)")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (Accelerate)")
    p.add_argument("--checkpoint-every", type=int, help="updates between checkpoints (default 200)")
    p.add_argument("--stop-after", type=int, help="stop after N updates in all (resume by rerunning)")
    add_quiet(p)
    p.set_defaults(func=_finetune)
