"""Every benchmark runs: a tiny smoke run of each script (sizes only; speed is never asserted here).
``bench_serve.py`` needs a running server: its smoke run is ``test_serve.py``'s."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_benchmark(name: str, args: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
    return capsys.readouterr().out


@pytest.mark.slow
def test_bench_paint_times_every_sampler_of_the_shipped_sizes(monkeypatch, capsys):
    out = run_benchmark(
        "bench_paint.py",
        ["--presets", "shapes-64", "--variants", "x-lxmert", "lxmert-grid", "--batches", "1"]
        + ["--repeats", "1", "--full-budget", "1", "--threads", "1"],
        monkeypatch,
        capsys,
    )
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| shapes-64 |")]
    # 2 variants × 5 samplers × cache on/off; the shipped grid is 8×8 (64 cells = TL→BR's steps).
    assert len(rows) == 20
    assert {row[3] for row in rows if row[2] == "tl-br"} == {"64"}
    assert all(float(row[6]) > 0 for row in rows)


@pytest.mark.slow
def test_bench_pretrain(monkeypatch, capsys):
    out = run_benchmark(
        "bench_pretrain.py",
        ["--presets", "shapes-64", "--batch-size", "2", "--warmup", "0", "--repeats", "1", "--threads", "1"],
        monkeypatch,
        capsys,
    )
    assert "trainable parameters" in out
    assert {line.split()[1] for line in out.splitlines() if line.startswith("shapes-64 ")} == {"fp32", "bf16"}


@pytest.mark.slow
def test_bench_generator(monkeypatch, capsys):
    out = run_benchmark(
        "bench_generator.py",
        ["--preset", "shapes-64", "--sizes", "64", "--batch-size", "1", "--repeats", "1", "--threads", "1"]
        + ["--bottleneck", "32", "--no-drift"],
        monkeypatch,
        capsys,
    )
    assert "grid 8, D 40, K 256," in out  # the shipped model's sizes (train_all.visual_sizes)
    rows = [line for line in out.splitlines() if line.strip().startswith("64 px")]
    assert len(rows) == 3 and all("img/s" in row for row in rows)


@pytest.mark.slow
def test_bench_features(monkeypatch, capsys, tmp_path):
    work = tmp_path / "work"
    run_benchmark(
        "bench_features.py",
        ["--data", str(tmp_path / "data"), "--work", str(work), "--train", "24", "--val", "8"]
        + ["--steps", "2", "--dims", "16", "--grids", "8", "--ks", "8", "--balance-ks"]
        + ["--sample-size", "2000", "--no-pixels"],
        monkeypatch,
        capsys,
    )
    rows = json.loads((work / "results.json").read_text())
    assert [row.get("backbone") for row in rows[:1]] == ["backbone-d16"]
    clusters = [row for row in rows if "k" in row]
    assert len(clusters) == 1 and (clusters[0]["grid"], clusters[0]["k"], clusters[0]["dim"]) == (8, 8, 16)
