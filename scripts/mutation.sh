#!/usr/bin/env bash
# Mutation testing (issue 26) of evaluation/, sampling/ and pipelines/ with the fast tests.
#
#   scripts/mutation.sh [WORK] [MUTANT_GLOB ...]
#
# Runs mutmut 3 (`.venv/bin/pip install mutmut`; not a dependency of the package or of CI) in a copy
# of the committed tree (`git archive HEAD` into WORK, default /tmp/xlxmert-mutation), never in the
# checkout: mutmut writes its mutants/ folder next to the sources. A second run in the same WORK
# resumes (FRESH=1 starts over). MUTANT_GLOB limits the run to some functions, e.g. the metric
# functions:
#
#   scripts/mutation.sh /tmp/mut-metrics 'xlxmert.evaluation.metrics.tasks.*' 'xlxmert.evaluation.metrics.semantic.*'
#
# Bounded for a shared CPU: one torch thread, CHILDREN parallel mutants (default 2), LIMIT seconds
# in all (default 3600). PYTEST_EXTRA adds pytest arguments (e.g. a --deselect). Writes mutmut's
# per-mutant results to WORK/results.txt and prints the score per package (killed over checked
# mutants; docs/testing.md has the last measured numbers).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/xlxmert-mutation}
shift || true
PY=${PY:-$REPO/.venv/bin/python}
CHILDREN=${CHILDREN:-2}
LIMIT=${LIMIT:-3600}

if [ "$(cd "$WORK" 2>/dev/null && pwd)" = "$REPO" ]; then
    echo "WORK must be a copy, not the checkout" >&2
    exit 2
fi
# The venv's editable install puts the checkout's src/ on sys.path (a .pth file), where mutmut's
# mutants/src must be the only xlxmert: a side venv sees the venv's packages as a plain path
# (whose .pth files are not read).
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
MUTVENV=${MUTVENV:-/tmp/xlxmert-mutvenv}
if [ ! -x "$MUTVENV/bin/python" ]; then
    "$("$PY" -c 'import sys; print(sys._base_executable)')" -m venv --without-pip "$MUTVENV"
    "$MUTVENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" |
        xargs -I{} sh -c "echo '$SITE' > {}/xlxmert-venv.pth"
fi
MPY="$MUTVENV/bin/python"
if ! "$MPY" -c "import mutmut" 2>/dev/null; then
    echo "mutmut not found: $(dirname "$PY")/pip install mutmut" >&2
    exit 2
fi
if "$MPY" -c "import xlxmert" 2>/dev/null; then
    echo "$MPY imports xlxmert from outside the copy; check $MUTVENV" >&2
    exit 2
fi
if [ "${FRESH:-0}" = 1 ]; then rm -rf "$WORK"; fi
if [ ! -d "$WORK/src" ]; then
    mkdir -p "$WORK"
    git -C "$REPO" archive HEAD | tar -x -C "$WORK"
    # mutmut leaves decorated functions alone: in the copy, `@torch.no_grad()` becomes a
    # `with torch.no_grad():` around the body (the same function), so the metrics get mutated.
    "$PY" - "$WORK/src/xlxmert" <<'EOF'
import ast
import sys
from pathlib import Path

for path in sorted(Path(sys.argv[1]).glob("[eps]*/**/*.py")):
    lines = path.read_text().splitlines(keepends=True)
    nodes = [
        n
        for n in ast.walk(ast.parse("".join(lines)))
        if isinstance(n, ast.FunctionDef)
        and [ast.unparse(d) for d in n.decorator_list] == ["torch.no_grad()"]
    ]
    for node in sorted(nodes, key=lambda n: -n.lineno):
        first, last = node.body[0].lineno - 1, node.end_lineno
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        body = [("    " + line) if line.strip() else line for line in lines[first:last]]
        lines[first:last] = [f"{indent}with torch.no_grad():\n", *body]
        del lines[node.decorator_list[0].lineno - 1]
    path.write_text("".join(lines))
EOF
    # The fast tests only: test_graders.py and test_report.py train graders (a minute per mutant),
    # test_readme_commands.py starts a second interpreter and test_captions.py's trained-model
    # test trains (12 s); they run in the ordinary suite. mutmut reads one pytest argument per
    # line (and takes test files, not node ids, as the selection: hence the --deselect).
    {
        printf '[mutmut]\nsource_paths=src/\nonly_mutate=\n'
        printf '    src/xlxmert/%s/*\n' evaluation sampling pipelines
        printf 'also_copy=\n    models/\n    docs/\n    Makefile\npytest_add_cli_args=\n'
        # shellcheck disable=SC2086
        printf '    %s\n' -p no:cacheprovider -W ignore --deselect \
            tests/test_captions.py::test_a_tiny_trained_model_writes_captions_truer_than_chance \
            ${PYTEST_EXTRA:-}
        printf 'pytest_add_cli_args_test_selection=\n'
        printf '    tests/%s\n' test_metrics_oracle.py test_metrics_edges.py test_metrics_edges_tasks.py \
            test_evaluation_controls.py test_metrics_mutants.py test_wiring.py test_sampling.py \
            test_sampling_mutants.py test_captions.py test_pipelines.py test_pipelines_mutants.py \
            test_image_text_mutants.py \
            test_cli_paint.py
    } > "$WORK/setup.cfg"
fi
cd "$WORK"
# The folder must exist before mutmut starts: Python caches a missing sys.path entry as absent,
# and a first run in a fresh WORK then fails its stats run with "No module named 'xlxmert'".
mkdir -p mutants/src
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
# A test's subprocess imports the mutated tree too (mutmut selects the mutant by environment).
export PYTHONPATH="$WORK/mutants/src"
timeout "$LIMIT" "$MPY" -m mutmut run --max-children "$CHILDREN" "$@" || echo "mutmut stopped (exit $?)"
"$MPY" -m mutmut results --all true > results.txt || true
"$MPY" - "$@" <<'EOF'
"""Score per package: killed (incl. timeouts, crashes) over all checked mutants; a mutant no fast
test reaches ("no tests") counts as surviving."""
import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

globs = sys.argv[1:] or ["*"]
per = {}
for meta in sorted(Path("mutants/src/xlxmert").rglob("*.py.meta")):
    package = meta.relative_to("mutants/src/xlxmert").parts[0]
    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        if any(fnmatch.fnmatch(name, g) for g in globs):
            per.setdefault(package, Counter())[status_by_exit_code[code]] += 1
for package, c in sorted(per.items()):
    killed = c["killed"] + c["timeout"] + c["segfault"]
    alive = c["survived"] + c["no tests"] + c["suspicious"]
    score = f"{killed / (killed + alive):.1%}" if killed + alive else "n/a"
    print(f"{package}: {score} ({killed} killed, {c['survived']} survived, {c['no tests']} no tests, "
          f"{c['suspicious']} suspicious, {c['not checked']} not checked)")
EOF
