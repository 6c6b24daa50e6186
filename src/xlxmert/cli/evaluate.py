"""``xlxmert evaluate`` (the paper's Table 1 on ShapeScenes) and ``xlxmert evaluator train``.

    xlxmert evaluator train --data DATA [--out EVAL_DIR] [--evaluator-steps 3000 --matcher-steps 1000]
    xlxmert evaluate --model DIR --data DATA --split test --metrics all --sampler mask-predict --steps 4
                     [--evaluator EVAL_DIR] [--n N] [--compare DIR ...] [--seed 0 1 2] --out OUT
    xlxmert evaluate-captions --model DIR --data DATA --split test --n 1000 --seed 0 1 2 --out OUT

``EVAL_DIR`` defaults to ``DATA/evaluation``; it holds the evaluator network (FID/IS, facts) and the
image–text matching surrogate (R-precision, semantic accuracy), trained on ShapeScenes only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xlxmert.cli.options import add_config_flags, config_values, log_config
from xlxmert.cli.paint import _device


def _evaluation_dir(args: argparse.Namespace) -> Path:
    return Path(args.evaluator) if args.evaluator else Path(args.data) / "evaluation"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _train(args: argparse.Namespace) -> int:
    from xlxmert.evaluation.graders.evaluator import EvaluatorConfig
    from xlxmert.evaluation.graders.suite import train_suite

    out = _evaluation_dir(args) if args.out is None else Path(args.out)
    report = train_suite(
        args.data,
        out,
        evaluator_steps=args.evaluator_steps,
        matcher_steps=args.matcher_steps,
        split=args.split,
        eval_split=args.eval_split,
        n=args.n,
        evaluator_config=EvaluatorConfig.from_preset(args.preset),
        progress=not args.quiet,
    )
    acc = report.get("evaluator_accuracy")
    if acc:
        rp = report["matcher_r_precision"]
        print(
            f"evaluator on {report['eval_split']}: place {acc['place']:.3f}, "
            f"exact scene {acc['scene_exact']:.3f}, object recall {acc['object_recall']:.3f}; "
            f"matcher R-prec easy {rp['easy']:.3f}, hard {rp['hard']:.3f}"
        )
    print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from xlxmert.evaluation.report import EvaluationConfig, evaluate, evaluate_seeds, parse_metrics
    from xlxmert.pipelines import default_model_dir

    models = [Path(args.model) if args.model else default_model_dir(), *map(Path, args.compare or [])]
    config = EvaluationConfig(
        metrics=parse_metrics(args.metrics),
        seed=args.seed[0],
        device=str(_device(args.device)),
        **config_values(args, EvaluationConfig),
    )
    log_config(config)
    out, progress = Path(args.out), not args.quiet
    if len(args.seed) > 1:
        evaluate_seeds(models, args.data, _evaluation_dir(args), out, config, args.seed, progress)
        written = f"{out / 'results.json'}, {out / 'table.md'} (the mean) and {out}/seed-S/ (each seed)"
    else:
        evaluate(models, args.data, _evaluation_dir(args), out, config, progress)
        written = f"{out / 'results.json'}, {out / 'table.md'}, {out / 'figure.png'}"
    sys.stdout.write((out / "table.md").read_text())
    print(f"wrote {written}")
    return 0


def _evaluate_captions(args: argparse.Namespace) -> int:
    from xlxmert.evaluation.caption_report import evaluate_captions
    from xlxmert.pipelines import default_model_dir

    out = Path(args.out)
    evaluate_captions(
        Path(args.model) if args.model else default_model_dir(),
        args.data,
        out,
        split=args.split,
        n=args.n,
        seeds=args.seed,
        gibbs_length=args.gibbs_length,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    sys.stdout.write((out / "table.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'captions.json'}")
    return 0


def _accuracy(args: argparse.Namespace) -> int:
    from xlxmert.evaluation.graders.evaluator import ShapeSceneEvaluator, evaluator_accuracy
    from xlxmert.evaluation.graders.suite import EVALUATOR_SUBDIR
    from xlxmert.evaluation.split import load_examples

    model = ShapeSceneEvaluator.from_pretrained(_evaluation_dir(args) / EVALUATOR_SUBDIR)
    print(json.dumps(evaluator_accuracy(model, load_examples(args.data, args.split, args.n)), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "evaluate",
        help="score models like the paper's Table 1 (FID, IS, R-precision, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--model", help="model folder (default: $XLXMERT_MODEL or models/shapes-64)")
    ev.add_argument(
        "--compare", nargs="+", metavar="DIR", help="more model folders, as more rows of the table"
    )
    ev.add_argument("--data", required=True, help="ShapeScenes data root (holds SPLIT/)")
    ev.add_argument("--evaluator", metavar="EVAL_DIR", help="evaluation networks (default: DATA/evaluation)")
    ev.add_argument(
        "--metrics",
        default="all",
        help="'all' or a comma list of fid,is,r-precision,semantic,facts,vqa,gqa,nlvr2,captioning",
    )
    ev.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        metavar="S",
        help="draws the captions, the sampling and the negatives; several seeds: one evaluation per "
        "seed in OUT/seed-S/ and their mean in OUT/ (how the quality bar is read)",
    )
    ev.add_argument("--device", default="cpu", help="where the models run: cpu (default), cuda or cuda:N")
    ev.add_argument("--out", required=True, help="output folder (results.json, table.md, figure.png, caches)")
    add_config_flags(
        ev,
        "xlxmert.evaluation.report.EvaluationConfig",
        skip=("metrics", "seed", "device"),
        preset=None,
        title="EvaluationConfig",
    )
    ev.set_defaults(func=_evaluate)

    cap = subparsers.add_parser(
        "evaluate-captions",
        help="score captioning: BLEU-4, CIDEr-D, facts true, grammar (default decoder, Gibbs, chance)",
    )
    cap.add_argument("--model", help="model folder (default: $XLXMERT_MODEL or models/shapes-64)")
    cap.add_argument("--data", required=True, help="ShapeScenes data root (holds SPLIT/)")
    cap.add_argument("--split", default="test")
    cap.add_argument("--n", type=_positive, default=1000, help="number of split images (default 1000)")
    cap.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S", help="one evaluation per seed")
    cap.add_argument("--gibbs-length", default="12", help="the Gibbs row's caption length (or auto)")
    cap.add_argument("--batch-size", type=_positive, default=16)
    cap.add_argument("--out", required=True, help="output folder (results.json, table.md, captions.json)")
    cap.set_defaults(func=_evaluate_captions)

    group = subparsers.add_parser("evaluator", help="train / check the networks that grade generated images")
    sub = group.add_subparsers(dest="evaluator_command", metavar="ACTION", parser_class=type(group))
    tr = sub.add_parser("train", help="train the evaluator and the matching surrogate on ShapeScenes")
    tr.add_argument("--data", required=True, help="ShapeScenes data root")
    tr.add_argument("--out", help="EVAL_DIR (default: DATA/evaluation)")
    tr.add_argument("--split", default="train")
    tr.add_argument("--eval-split", default="val", help="split to report accuracy on (skipped if absent)")
    tr.add_argument("--n", type=_positive, help="use only the first N images of the split")
    tr.add_argument("--preset", default="shapes-64", choices=("shapes-64", "paper"))
    tr.add_argument("--evaluator-steps", type=_positive, default=3000)
    tr.add_argument("--matcher-steps", type=_positive, default=1000)
    tr.set_defaults(func=_train, evaluator=None)
    ac = sub.add_parser("accuracy", help="report the evaluator's accuracy on original images of a split")
    ac.add_argument("--data", required=True)
    ac.add_argument("--split", default="test")
    ac.add_argument("--evaluator", metavar="EVAL_DIR", help="default: DATA/evaluation")
    ac.add_argument("--n", type=_positive)
    ac.set_defaults(func=_accuracy)
