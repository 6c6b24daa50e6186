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
#   scripts/mutation.sh /tmp/mut-metrics 'xlxmert.evaluation.tasks.*' 'xlxmert.evaluation.semantic.*'
#
# Bounded for a shared CPU: one torch thread, CHILDREN parallel mutants (default 2), LIMIT seconds
# in all (default 3600). Prints mutmut's per-mutant results and the score per package (killed +
# timeouts over all tested mutants; docs/testing.md has the last measured numbers).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/xlxmert-mutation}
shift || true
PY=${PY:-$REPO/.venv/bin/python}
MUTMUT=${MUTMUT:-$(dirname "$PY")/mutmut}
CHILDREN=${CHILDREN:-2}
LIMIT=${LIMIT:-3600}

if [ ! -x "$MUTMUT" ]; then
    echo "mutmut not found at $MUTMUT: $(dirname "$PY")/pip install mutmut" >&2
    exit 2
fi
if [ "$(cd "$WORK" 2>/dev/null && pwd)" = "$REPO" ]; then
    echo "WORK must be a copy, not the checkout" >&2
    exit 2
fi
if [ "${FRESH:-0}" = 1 ]; then rm -rf "$WORK"; fi
if [ ! -d "$WORK/src" ]; then
    mkdir -p "$WORK"
    git -C "$REPO" archive HEAD | tar -x -C "$WORK"
    # The fast tests only: test_evaluation.py trains its graders (a minute per mutant) and
    # test_readme_commands.py starts a second interpreter; both run in the ordinary suite.
    cat > "$WORK/setup.cfg" <<'EOF'
[mutmut]
source_paths=src/
only_mutate=
    src/xlxmert/evaluation/*
    src/xlxmert/sampling/*
    src/xlxmert/pipelines/*
also_copy=
    models/
    docs/
    Makefile
pytest_add_cli_args=-p no:cacheprovider -q -W ignore
pytest_add_cli_args_test_selection=
    tests/test_metrics_oracle.py
    tests/test_evaluation_controls.py
    tests/test_wiring.py
    tests/test_sampling.py
    tests/test_pipelines.py
    tests/test_pipelines_tiny.py
    tests/test_cli_paint.py
EOF
fi
cd "$WORK"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
# A test's subprocess imports the mutated tree too (mutmut selects the mutant by environment).
export PYTHONPATH="$WORK/mutants/src"
timeout "$LIMIT" "$MUTMUT" run --max-children "$CHILDREN" "$@" || echo "mutmut stopped (exit $?)"
"$MUTMUT" results --all true > results.txt || true
"$PY" - "$@" <<'EOF'
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
