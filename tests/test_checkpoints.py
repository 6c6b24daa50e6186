"""Crash-safe checkpoints (utils.checkpoint) and every training stage's exact resume after a kill.

Each stage is killed with SIGKILL right after its first checkpoint (in a subprocess), and, in a
second run, between writing a checkpoint and renaming it into place (the on-disk state such a kill
leaves: the finished temporary folder beside the previous checkpoint). Rerun, each must repeat the
uninterrupted run's losses exactly.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from checkpoint_stages import checkpoints_of, run_stage
from test_generator_training import world  # noqa: F401 - fixture
from test_pretrain import (
    cli_args,
    tiny,  # noqa: F401 - fixture
)
from test_pretrain import metrics as pretrain_metrics
from xlxmert.cli import main as cli_main
from xlxmert.errors import XLXMERTError
from xlxmert.utils import checkpoint as ckpt_module
from xlxmert.utils.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_folders,
    load_latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

HERE = Path(__file__).resolve().parent


# -- the helper ------------------------------------------------------------------------------------
def test_save_keeps_the_newest_and_reads_back(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"w": torch.full((3,), float(step)), "note": "x"}, keep=2)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step_0000002", "step_0000003"]
    latest = load_latest_checkpoint(tmp_path)
    assert latest.step == 3 and latest.state["note"] == "x" and latest.state["w"].tolist() == [3.0] * 3
    save_checkpoint(tmp_path, 3, {"w": torch.zeros(1)})  # the same step again replaces it
    assert read_checkpoint(tmp_path / "step_0000003").state["w"].tolist() == [0.0]
    assert load_latest_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "checksum missing", "flipped byte"])
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_used(tmp_path, damage):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(100)})
    newest = save_checkpoint(tmp_path, 2, {"w": torch.full((100,), 2.0)})
    state = newest / ckpt_module.STATE_NAME
    data = state.read_bytes()
    if damage == "truncated":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "zero-byte":
        state.write_bytes(b"")
    elif damage == "checksum missing":
        (newest / ckpt_module.CHECKSUM_NAME).unlink()
    else:
        state.write_bytes(data[:-40] + bytes([data[-40] ^ 1]) + data[-39:])
    with pytest.warns(UserWarning, match="step_0000002") as caught:
        latest = load_latest_checkpoint(tmp_path)
    assert latest.step == 1 and len(caught) == 1 and "\n" not in str(caught[0].message)
    # Every checkpoint damaged: an error that says what to do, not a fresh start.
    (tmp_path / "step_0000001" / ckpt_module.STATE_NAME).write_bytes(b"")
    with warnings.catch_warnings(), pytest.raises(XLXMERTError, match="delete"):
        warnings.simplefilter("ignore")
        load_latest_checkpoint(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = save_checkpoint(tmp_path / "c", 1, {"w": torch.ones(1)})
    state = folder / ckpt_module.STATE_NAME
    state.write_bytes(pickle.dumps({"step": 1, "evil": _Evil()}, protocol=2))
    (folder / ckpt_module.CHECKSUM_NAME).write_text(f"{ckpt_module._sha256(state)}  state.pt\n")
    with pytest.raises(XLXMERTError, match="does not load"):
        read_checkpoint(folder)
    assert not (tmp_path / "pwned").exists()


def test_a_kill_mid_write_leaves_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(1)})
    half = tmp_path / ".tmp-step_0000002"  # what a kill while writing step 2 leaves
    half.mkdir()
    (half / ckpt_module.STATE_NAME).write_bytes(b"\x80\x02partial")
    assert load_latest_checkpoint(tmp_path).step == 1
    save_checkpoint(tmp_path, 2, {"w": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000001", "step_0000002"]


# -- the stages --------------------------------------------------------------------------------------
STAGES = ("backbone", "evaluator", "matcher", "generator", "pretrain", "finetune")


@pytest.fixture(scope="module")
def finetune_model(tmp_path_factory, tiny_shapes):
    """The tiny model folder with a tokenizer that knows the tiny split's questions."""
    from conftest import build_tiny_model, retokenize
    from xlxmert.training.finetune_data import load_task_split

    texts = load_task_split(tiny_shapes, "vqa", "train").texts
    return retokenize(build_tiny_model(tmp_path_factory.mktemp("ft") / "m"), texts)


@pytest.fixture
def stage_paths(request, tiny_shapes):  # noqa: F811
    stage = request.param
    if stage == "generator":
        root, vocab = request.getfixturevalue("world")
        return stage, {"data": str(root), "vocab": str(vocab)}
    if stage == "pretrain":
        return stage, {k: str(v) for k, v in request.getfixturevalue("tiny").items()}
    if stage == "finetune":
        return stage, {"shapes": str(tiny_shapes), "model": str(request.getfixturevalue("finetune_model"))}
    return stage, {"shapes": str(tiny_shapes)}


_STRAIGHT: dict[tuple[str, str], list[float]] = {}


def _straight(stage: str, paths: dict[str, str], tmp_path_factory) -> list[float]:
    """The uninterrupted run's losses (computed once per stage and data)."""
    key = (stage, json.dumps(paths, sort_keys=True))
    if key not in _STRAIGHT:
        _STRAIGHT[key] = run_stage(stage, tmp_path_factory.mktemp(f"straight-{stage}"), paths)
    return _STRAIGHT[key]


KILLER = """
import json, os, signal, sys
sys.path.insert(0, {here!r})
import xlxmert.utils.checkpoint as c
real = c.save_checkpoint
def killed_after_first(*args, **kwargs):
    path = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
c.save_checkpoint = killed_after_first
import checkpoint_stages
checkpoint_stages.run_stage(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
"""


def _resumed_history(stage, straight, rerun):
    """The losses a resumed run repeats: stages that checkpoint their history return it whole;
    the generator's history covers only the steps it ran (after the checkpoint it resumed from)."""
    if stage == "generator":
        n = len(rerun) // 2
        return rerun, straight[len(straight) // 2 - n : len(straight) // 2] + straight[-n:]
    return rerun, straight


@pytest.mark.parametrize("stage_paths", STAGES, indirect=True)
def test_sigkill_after_the_first_checkpoint_then_rerun_repeats_the_losses(
    stage_paths, tmp_path, tmp_path_factory
):
    stage, paths = stage_paths
    straight = _straight(stage, paths, tmp_path_factory)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = KILLER.format(here=str(HERE))
    proc = subprocess.run(
        [sys.executable, "-c", code, stage, str(out), json.dumps(paths)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = checkpoint_folders(checkpoints_of(stage, out))
    assert [p.name for p in ckpts] == ["step_0000001"]
    rerun = run_stage(stage, out, paths)
    got, want = _resumed_history(stage, straight, rerun)
    assert got == want and len(got) >= 3
    # The component stages delete their checkpoints once the result is saved.
    left = checkpoint_folders(checkpoints_of(stage, out))
    assert (left == []) == (stage in ("backbone", "evaluator", "matcher"))


class _KilledBeforeRename(BaseException):
    pass


@pytest.mark.parametrize("stage_paths", STAGES, indirect=True)
def test_a_kill_between_write_and_rename_resumes_from_the_previous_checkpoint(
    stage_paths, tmp_path, tmp_path_factory, monkeypatch
):
    stage, paths = stage_paths
    straight = _straight(stage, paths, tmp_path_factory)
    real, calls = ckpt_module.save_checkpoint, []

    def killed_before_rename(folder, step, state, keep=2):
        path = real(folder, step, state, keep + 1)  # pruning happens after the rename
        calls.append(step)
        if len(calls) == 3:  # undo the rename: the finished temporary folder, no step_3
            path.rename(path.parent / f".tmp-{path.name}")
            raise _KilledBeforeRename

    monkeypatch.setattr(ckpt_module, "save_checkpoint", killed_before_rename)
    for module in ("xlxmert.training.pretrain", "xlxmert.training.generator", "xlxmert.training.finetune"):
        monkeypatch.setattr(importlib.import_module(module), "save_checkpoint", killed_before_rename)
    out = tmp_path / "killed"
    with pytest.raises(_KilledBeforeRename):
        run_stage(stage, out, paths)
    monkeypatch.undo()
    folders = sorted(p.name for p in checkpoints_of(stage, out).iterdir())
    assert folders == [".tmp-step_0000003", "step_0000001", "step_0000002"]
    rerun = run_stage(stage, out, paths)
    got, want = _resumed_history(stage, straight, rerun)
    assert got == want


def test_pretraining_skips_a_truncated_newest_checkpoint_with_a_one_line_warning(tiny, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = cli_args(tiny, out, "--steps", "4", "--batch-size", "4", "--checkpoint-every", "2", "--quiet")
    assert cli_main([*args, "--eval-every", "100"]) == 0
    state = out / CHECKPOINT_DIR / "step_0000004" / ckpt_module.STATE_NAME
    state.write_bytes(state.read_bytes()[:1000])
    capsys.readouterr()
    code = cli_main([*args, "--eval-every", "100"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.startswith("xlxmert: warning: checkpoint") and len(err.strip().splitlines()) == 1
    assert "step_0000004" in err and "checksum" in err and "Traceback" not in err
    steps = [s for s, split, m, _ in pretrain_metrics(out) if split == "train" and m == "loss_ccc"]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # steps 3-4 redone once, not repeated
    assert read_checkpoint(out / CHECKPOINT_DIR / "step_0000004").step == 4  # rewritten intact
