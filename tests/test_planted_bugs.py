"""``scripts/planted_bugs.py`` stays plantable: every bug's line is in the source exactly once, its
tests exist, and docs/testing.md's table names the file the bug is planted in. (The script itself
runs the suite once per bug, minutes; it is run by hand, as docs/testing.md says.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bugs() -> list[tuple[str, str, str, str, list[str]]]:
    spec = importlib.util.spec_from_file_location("planted_bugs", ROOT / "scripts" / "planted_bugs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BUGS


@pytest.mark.parametrize("bug", _bugs(), ids=lambda bug: bug[0][:40])
def test_each_planted_bug_has_one_place_in_the_source_and_its_tests(bug):
    name, rel, old, _, tests = bug
    source = (ROOT / "src" / "xlxmert" / rel).read_text()
    assert source.count(old) == 1, f"{name!r}: {old!r} occurs {source.count(old)} times in {rel}"
    assert tests and all((ROOT / t).is_file() for t in tests)
    table = (ROOT / "docs" / "testing.md").read_text()
    assert f"| {name} | `{rel}` |" in table
