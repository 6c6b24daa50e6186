"""``xlxmert study table1|table2|table3|table4``: one of the paper's tables on ShapeScenes.

xlxmert study tableN --data DATA --out OUT [--budget small|full] [--seeds 3]
"""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_config_flags, config_values, log_config

TABLE_CHOICES = ("table1", "table2", "table3", "table4")


def _study(args: argparse.Namespace) -> int:
    from xlxmert.study.runner import StudyConfig, run_table

    study = StudyConfig.from_preset(args.budget, **config_values(args, StudyConfig))
    log_config(study)
    results = run_table(int(args.table[-1]), args.data, args.out, study, progress=not args.quiet)
    held = sum(c["verdict"] == "held" for c in results["claims"])
    print(
        f"wrote {args.out}/{args.table}.md, .json and .png: {len(results['rows'])} rows; "
        f"the paper's orderings held in {held} of {len(results['claims'])} comparisons"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "study",
        help="reproduce one of the paper's Tables 1-4 on ShapeScenes (trains, evaluates, writes the table)",
        description="Train what the paper's table needs, evaluate every row with the same graders and "
        "captions over several seeds, and write OUT/tableN.md, OUT/tableN.json and OUT/tableN.png "
        "(bars with 95 % bootstrap intervals over seeds and captions; a column says whether the paper's "
        "ordering holds, decided with the interval). DATA is the ShapeScenes data root "
        "(DATA/train, val, test, compositional), generated there with the recipe's sizes if it has no "
        "splits; OUT holds everything else (OUT/work: the shared tokenizer, backbone, features, "
        "vocabulary, generator and graders; OUT/models/ROW; OUT/evals; OUT/finetuned), so the four "
        "tables share one OUT and a finished row is never retrained. Rerun the same command to resume.",
    )
    p.add_argument("table", choices=TABLE_CHOICES, help="which of the paper's tables")
    p.add_argument("--data", required=True, help="ShapeScenes data root (generated if it has no splits)")
    p.add_argument("--out", required=True, help="study folder (shared by the four tables)")
    p.add_argument(
        "--budget",
        choices=("small", "full"),
        default="full",
        help="small: the tiny recipe (a smoke run of minutes); full (default): the shapes-64 recipe, "
        "18500 pretraining steps at batch 128 per model row (the reported budget)",
    )
    add_config_flags(
        p,
        "xlxmert.study.runner.StudyConfig",
        skip=("preset",),
        preset="budget",
        title="the budget (StudyConfig)",
    )
    p.set_defaults(func=_study)
