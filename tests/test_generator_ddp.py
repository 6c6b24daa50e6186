"""Generator training on two CPU processes (torchrun, gloo) equals one process with the doubled batch.

Each process takes its half of the global batch and DDP averages the gradients, so two processes
with batch 2 make the same updates as one with batch 4. The generator's per-pixel noise is drawn
per process (it is not a function of the example); its learned scales start at zero, so the first
step's losses are compared to float precision, the update of every weight but those scales within
2e-5 (a step is lr = 4e-4; Adam magnifies reduction-order differences of near-zero gradients), and
the later losses within 1e-3.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from test_generator_training import (
    _config,
    world,  # noqa: F401 - fixture
)
from xlxmert.training.generator import train_generator
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, checkpoint_folders, read_checkpoint

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_generator_training import _config
from xlxmert.training.generator import train_generator
import torch
torch.set_num_threads(1)
config = _config(steps=2, batch_size=2, checkpoint_every=1)
result = train_generator({root!r}, {vocab!r}, {out!r}, config, progress=False)
import pathlib, torch.distributed as dist
(pathlib.Path({out!r}) / f"history_{{dist.get_rank()}}.json").write_text(json.dumps(result.history))
"""


def _state_after_step_1(run: Path) -> dict:
    """G and D weights of the run's step-1 checkpoint."""
    state = read_checkpoint(run / CHECKPOINT_DIR / "step_0000001").state
    return {**{f"g.{k}": v for k, v in state["generator"].items()}, **state["discriminator"]}


def test_two_processes_equal_one_with_the_doubled_batch(world, tmp_path):  # noqa: F811
    root, vocab = world
    config = _config(steps=2, batch_size=4, checkpoint_every=1)
    one = train_generator(root, vocab, tmp_path / "one", config, progress=False)
    out = tmp_path / "two"
    script = tmp_path / "run.py"
    tests = str(Path(__file__).resolve().parent)
    script.write_text(SCRIPT.format(tests=tests, root=str(root), vocab=str(vocab), out=str(out)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    # Both ranks report the losses averaged over the processes, and they equal one process's.
    h0 = json.loads((out / "history_0.json").read_text())
    h1 = json.loads((out / "history_1.json").read_text())
    assert h0 == h1 and len(h0) == 2
    for two, single in zip(h0, one.history):
        for key in ("loss_g", "loss_d", "perceptual", "feature_matching", "cluster_real", "l1"):
            assert np.isclose(two[key], single[key], rtol=1e-3, atol=1e-6), (two["step"], key)
    # Step 1 is noise-free: losses and the updated G and D equal to float precision.
    assert np.isclose(h0[0]["loss_g"], one.history[0]["loss_g"], rtol=1e-5)
    w_one, w_two = _state_after_step_1(tmp_path / "one"), _state_after_step_1(out)
    assert w_one.keys() == w_two.keys()
    for key in w_one:  # but the noise scales, whose gradient is the noise each process drew
        if ".noise" not in key:
            assert torch.allclose(w_two[key], w_one[key], rtol=1e-4, atol=2e-5), key
    # Had both processes drawn the same batch (the first half), they would match this run instead.
    half = train_generator(
        root, vocab, tmp_path / "half", _config(steps=1, batch_size=2, checkpoint_every=1), progress=False
    )
    assert not np.isclose(h0[0]["l1"], half.history[0]["l1"], rtol=1e-3)
    w_half = _state_after_step_1(tmp_path / "half")
    assert not all(torch.allclose(w_half[k], w_one[k], rtol=1e-4, atol=2e-5) for k in w_one)
    # Only the main process wrote checkpoints and the component: complete folders, none half-written.
    assert [p.name for p in checkpoint_folders(out / CHECKPOINT_DIR)] == ["step_0000001", "step_0000002"]
    assert not list((out / CHECKPOINT_DIR).glob(".tmp-*"))
    assert (out / "generator" / "model.safetensors").is_file()
