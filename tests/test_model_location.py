"""Where a model folder is found: a local folder, a Hub repository id (from the Hub cache when
offline), ``$XLXMERT_MODEL``, the source tree's shipped model, or a regular install's copy."""

import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from xlxmert.cli import main
from xlxmert.errors import XLXMERTError
from xlxmert.pipelines import default_model_dir
from xlxmert.utils.hub import resolve_model_folder

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shapes-64"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding repository ``user/shapes`` (a copy of the shipped model)
    at commit ``abc123`` as its ``main``; the library's own layout, read by the library."""
    import huggingface_hub.constants as constants

    repo = tmp_path / "hub" / "models--user--shapes"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    shutil.copytree(SHIPPED, repo / "snapshots" / "abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return repo / "snapshots" / "abc123"


def test_a_local_folder_is_itself(tmp_path):
    assert resolve_model_folder(SHIPPED) == SHIPPED
    assert resolve_model_folder(str(tmp_path)) == tmp_path
    # A missing relative folder that cannot be a repository id is left to the loader's message.
    assert resolve_model_folder("no/such/folder/here") == Path("no/such/folder/here")


def test_a_hub_id_resolves_to_its_cached_snapshot_offline(hub_cache):
    assert resolve_model_folder("user/shapes") == hub_cache
    with pytest.raises(XLXMERTError, match="neither a local folder nor in the Hugging Face cache"):
        resolve_model_folder("user/missing")


def test_pipelines_and_the_cli_load_a_hub_id(hub_cache, tmp_path, capsys):
    from xlxmert.pipelines import AnswerPipeline, PaintPipeline

    torch.set_num_threads(1)
    pipe = PaintPipeline.from_pretrained("user/shapes")
    shipped = PaintPipeline.from_pretrained(SHIPPED)
    caption = ["a red circle at night"]
    assert list(pipe(caption, seed=3).images[0].getdata()) == list(
        shipped(caption, seed=3).images[0].getdata()
    )
    assert AnswerPipeline.from_pretrained("user/shapes").transformer.config == shipped.transformer.config
    out = tmp_path / "p.png"
    assert main(["paint", "a red circle at night", "--model", "user/shapes", "-o", str(out)]) == 0
    assert out.is_file()
    assert main(["paint", "a red circle", "--model", "user/missing", "-o", str(tmp_path / "q.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert "neither a local folder nor in the Hugging Face cache" in err and "\n" not in err


def test_the_default_model(monkeypatch, hub_cache, tmp_path):
    monkeypatch.delenv("XLXMERT_MODEL", raising=False)
    assert default_model_dir() == SHIPPED  # the source tree's
    monkeypatch.setenv("XLXMERT_MODEL", str(tmp_path))
    assert default_model_dir() == tmp_path
    monkeypatch.setenv("XLXMERT_MODEL", "user/shapes")
    assert default_model_dir() == hub_cache


def test_a_regular_install_finds_the_model_under_its_data_prefix(monkeypatch, tmp_path):
    """Without the source tree (a wheel install), the copy pyproject's data-files put under
    ``<prefix>/share/xlxmert/models/`` is the default."""
    import xlxmert.pipelines as pipelines

    monkeypatch.delenv("XLXMERT_MODEL", raising=False)
    fake_file = tmp_path / "site" / "lib" / "xlxmert" / "pipelines" / "__init__.py"
    monkeypatch.setattr(pipelines, "__file__", str(fake_file))
    installed = tmp_path / "prefix" / "share" / "xlxmert" / "models" / "shapes-64"
    real_get_path = sysconfig.get_path
    monkeypatch.setattr(
        sysconfig,
        "get_path",
        lambda name, *a, **k: str(tmp_path / "prefix") if name == "data" else real_get_path(name),
    )
    with pytest.raises(XLXMERTError, match="no model folder given and none found"):
        default_model_dir()
    shutil.copytree(SHIPPED, installed)
    assert default_model_dir() == installed


def test_pyproject_ships_every_file_of_the_default_model():
    import tomllib

    data_files = tomllib.loads((SHIPPED.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    shipped = {p.relative_to(SHIPPED.parents[1]) for p in SHIPPED.rglob("*") if p.is_file()}
    listed = {
        p.relative_to(SHIPPED.parents[1])
        for dest, patterns in data_files.items()
        for pattern in patterns
        for p in SHIPPED.parents[1].glob(pattern)
        if p.is_file() and dest == "share/xlxmert/" + str(p.parent.relative_to(SHIPPED.parents[1]))
    }
    assert listed == shipped
