"""``xlxmert finetune``: fine-tune a model folder on VQA v2, GQA or NLVR2 (a task head + the transformer).

xlxmert finetune --task vqa|gqa|nlvr2 --model MODEL_DIR --data DATA --out OUT [--from-scratch]
"""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_bf16_alias, add_config_flags, config_values, log_config


def _finetune(args: argparse.Namespace) -> int:
    from xlxmert.training.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(task=args.task, **config_values(args, FinetuneConfig))
    log_config(config)
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
    p.add_argument(
        "--answers", help="answer vocabulary (JSON list) for VQA/GQA; default: the training answers"
    )
    add_bf16_alias(p)
    p.add_argument("--stop-after", type=int, help="stop after N updates in all (resume by rerunning)")
    add_config_flags(
        p, "xlxmert.training.finetune.FinetuneConfig", skip=("task",), preset=None, title="FinetuneConfig"
    )
    p.set_defaults(func=_finetune)
