"""Plant the bugs of issue 26 one at a time in a COPY of the repository and list the tests that fail.

    git archive HEAD | tar -x -C /tmp/mut          # a copy without .git (never the checkout)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/planted_bugs.py /tmp/mut

Each bug is a one-line edit of the copy's ``src/``; the tests named beside it run against the copy
(``PYTHONPATH=<copy>/src``), the edit is reverted, and a Markdown table (bug → failing tests) is
printed. A bug that no test notices is a gap in the suite (exit 1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

# (bug, file under src/xlxmert, text, replacement, test files that must notice)
BUGS: list[tuple[str, str, str, str, list[str]]] = [
    (
        "evaluation's other-image-caption control computed with the images' own captions",
        "evaluation/report.py",
        "rotated = list(range(1, len(examples))) + [0]",
        "rotated = list(range(len(examples)))",
        ["tests/test_evaluation_controls.py"],
    ),
    (
        "semantic accuracy scores every caption against image 0",
        "evaluation/metrics/semantic.py",
        "idx = torch.tensor([i for i, _, _ in chunk])",
        "idx = torch.tensor([0 for i, _, _ in chunk])",
        ["tests/test_metrics_oracle.py"],
    ),
    (
        "hard R-precision scores every row against image 0",
        "evaluation/metrics/rprecision.py",
        "idx = torch.tensor([i for i, _ in chunk])",
        "idx = torch.tensor([0 for i, _ in chunk])",
        ["tests/test_metrics_oracle.py"],
    ),
    (
        "VQA answers graded against the next question's annotation",
        "evaluation/metrics/tasks.py",
        "result = score_vqa(predictions, records)",
        "result = score_vqa(predictions, records[1:] + records[:1])",
        ["tests/test_metrics_oracle.py"],
    ),
    (
        "PaintPipeline.decode lays out the grid transposed",
        "pipelines/paint.py",
        "feats.shape[-1]).permute(0, 3, 1, 2)",
        "feats.shape[-1]).permute(0, 3, 2, 1)",
        ["tests/test_wiring.py"],
    ),
    (
        "the CLI ignores $XLXMERT_MODEL",
        "cli/paint.py",
        "if args.model else default_model_dir()",
        "if args.model else Path('models/shapes-64')",
        ["tests/test_wiring.py", "tests/test_readme_commands.py"],
    ),
    (
        "pretraining ignores visual_masking (always uniform)",
        "training/pretrain_batches.py",
        'if config.visual_masking == "uniform":',
        "if True:",
        ["tests/test_wiring.py"],
    ),
    (
        "pretraining ignores ccc_data (always captions only)",
        "training/pretrain.py",
        'captions_only = pc.ccc_data == "captions"',
        "captions_only = True",
        ["tests/test_wiring.py"],
    ),
]


def run_tests(root: Path, files: list[str]) -> tuple[int, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-W", "ignore", *files]
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", result.stdout, flags=re.M)
    return result.returncode, failed


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = Path(sys.argv[1]).resolve()
    if (root / ".git").exists():
        print(f"{root} is a git checkout: plant bugs only in a copy (git archive HEAD | tar -x -C DIR)")
        return 2
    check = subprocess.run(
        [sys.executable, "-c", "import xlxmert; print(xlxmert.__file__)"],
        env={**os.environ, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
    )
    if not check.stdout.strip().startswith(str(root)):
        print(f"xlxmert is imported from {check.stdout.strip()}, not from the copy")
        return 2
    files = sorted({f for *_, tests in BUGS for f in tests})
    code, failed = run_tests(root, files)
    if code != 0:
        print("the tests fail before any bug is planted:", *failed, sep="\n  ")
        return 1
    rows, missed = [], 0
    for bug, rel, old, new, tests in BUGS:
        path = root / "src" / "xlxmert" / rel
        source = path.read_text()
        if source.count(old) != 1:
            print(f"cannot plant {bug!r}: {old!r} occurs {source.count(old)} times in {rel}")
            return 1
        path.write_text(source.replace(old, new))
        try:
            code, failed = run_tests(root, tests)
        finally:
            path.write_text(source)
        missed += not failed
        caught = "<br>".join(f"`{f.split('/')[-1]}`" for f in failed) or "**nothing**"
        rows.append(f"| {bug} | `{rel}` | {caught} |")
    print("| planted bug | file | failing tests |\n|---|---|---|")
    print("\n".join(rows))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
