"""One component contract (diffusers-style): ``model_index.json`` maps each component to
``[library, class]``, loading reads that map (one loader), each component loads and saves its own
folder, and the pipelines load each component once and wire them."""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import xlxmert
from conftest import build_tiny_model
from xlxmert.cli import main
from xlxmert.errors import XLXMERTError
from xlxmert.models.families import load_transformer
from xlxmert.pipelines import CaptionPipeline, PaintPipeline
from xlxmert.utils.model_folder import (
    COMPONENTS,
    component_class,
    load_component,
    read_model_index,
    update_model_index,
)
from xlxmert.visual.vocabulary import VisualVocabulary

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shapes-64"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("contract") / "m")


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "copy")
    return tmp_path / "copy"


def edit_index(folder: Path, **components) -> None:
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    index["components"].update(components)
    path.write_text(json.dumps(index))


def test_the_shipped_index_maps_every_component_to_an_importable_class_and_loading_uses_it():
    index = json.loads((SHIPPED / "model_index.json").read_text())
    assert index["recipe"] == "shapes-64" and index["recipe_hash"] == "78be75da12d4"
    assert index["_xlxmert_version"] == xlxmert.__version__
    assert getattr(xlxmert, index["_class_name"]) is PaintPipeline
    assert set(index["components"]) == {*COMPONENTS, "sampler"}
    for name, (library, class_name) in index["components"].items():
        assert library == "xlxmert" and component_class(SHIPPED, name) is getattr(xlxmert, class_name)
    pipe = PaintPipeline.from_pretrained(SHIPPED)
    loaded = {
        "tokenizer": pipe.tokenizer,
        "vocabulary": pipe.vocabulary,
        "transformer": pipe.transformer,
        "generator": pipe.generator,
        "sampler": pipe.sampler,
    }
    for name, component in loaded.items():
        assert type(component).__name__ == index["components"][name][1], name
    # The transformer reads its centroids from the vocabulary the pipeline loaded, not from disk.
    assert torch.equal(pipe.transformer.centroids, pipe.vocabulary.centroids)


def test_a_subclass_named_in_the_index_is_what_loads_and_each_component_loads_once(
    tiny, tmp_path, monkeypatch
):
    (tmp_path / "my_components.py").write_text(
        textwrap.dedent(
            """
            from xlxmert.models.transformer import XLxmertForPreTraining
            from xlxmert.visual.vocabulary import VisualVocabulary

            LOADS = []

            class TracedTransformer(XLxmertForPreTraining):
                @classmethod
                def from_pretrained(cls, folder, centroids):
                    LOADS.append(("transformer", folder))
                    return super().from_pretrained(folder, centroids)

            class TracedVocabulary(VisualVocabulary):
                @classmethod
                def from_pretrained(cls, folder):
                    LOADS.append(("vocabulary", folder))
                    return super().from_pretrained(folder)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_components", raising=False)
    import my_components

    folder = copy_of(tiny, tmp_path)
    edit_index(
        folder,
        transformer=["my_components", "TracedTransformer"],
        vocabulary=["my_components", "TracedVocabulary"],
    )
    pipe = PaintPipeline.from_pretrained(folder)
    assert type(pipe.transformer) is my_components.TracedTransformer
    assert type(pipe.vocabulary) is my_components.TracedVocabulary
    # Each component is read once, from its own folder.
    assert my_components.LOADS == [
        ("vocabulary", folder / "vocabulary"),
        ("transformer", folder / "transformer"),
    ]
    plain = PaintPipeline.from_pretrained(tiny)
    assert torch.equal(pipe(["a red circle"], seed=2).ids, plain(["a red circle"], seed=2).ids)
    my_components.LOADS.clear()
    captioner = CaptionPipeline.from_pretrained(folder)
    assert [name for name, _ in my_components.LOADS] == ["vocabulary", "transformer"]
    assert captioner.image_encoder.vocabulary is not None
    assert type(captioner.image_encoder.vocabulary) is my_components.TracedVocabulary
    # Saving records the classes that were loaded; loading the copy gives them back.
    pipe.save_pretrained(tmp_path / "saved")
    saved = read_model_index(tmp_path / "saved")["components"]
    assert saved["transformer"] == ["my_components", "TracedTransformer"]
    assert saved["generator"] == ["xlxmert", "SpadeGenerator"]
    assert type(load_transformer(tmp_path / "saved")) is my_components.TracedTransformer


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["xlxmert", "Nope"], "unknown transformer class xlxmert.Nope"),
        (["no_such_library_xyz", "Model"], "library 'no_such_library_xyz' cannot be imported"),
        (["xlxmert", "SpadeGenerator"], "the transformer class SpadeGenerator is not a GridEmbeddingModel"),
        ("transformer/", "component 'transformer' is 'transformer/', not [library, class]"),
        (["json", "dumps"], "unknown transformer class json.dumps"),
    ],
)
def test_an_unknown_class_is_a_one_line_error(tiny, tmp_path, capsys, spec, message):
    folder = copy_of(tiny, tmp_path)
    edit_index(folder, transformer=spec)
    with pytest.raises(XLXMERTError, match=message.replace("[", r"\[").replace(".", r"\.")):
        PaintPipeline.from_pretrained(folder)
    out = tmp_path / "x.png"
    assert main(["paint", "a red circle", "--model", str(folder), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("xlxmert: error:") and message in err and "\n" not in err and not out.exists()


def test_a_missing_component_folder_is_a_one_line_error(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    shutil.rmtree(folder / "vocabulary")
    with pytest.raises(XLXMERTError, match="has no vocabulary/ component"):
        load_transformer(folder)
    with pytest.raises(XLXMERTError, match="has no vocabulary/ component"):
        load_component(folder, "vocabulary", VisualVocabulary)


def test_a_folder_of_the_previous_format_loads_and_is_rewritten_on_update(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    old = {
        "_class_name": "XLxmert",
        "components": {name: name for name in COMPONENTS},
        "preset": "tiny-test",
        "recipe_hash": "0123456789ab",
    }
    (folder / "model_index.json").write_text(json.dumps(old))
    assert component_class(folder, "transformer").__name__ == "XLxmertForPreTraining"
    assert torch.equal(
        PaintPipeline.from_pretrained(folder)(["a red circle"], seed=1).ids,
        PaintPipeline.from_pretrained(tiny)(["a red circle"], seed=1).ids,
    )
    # The previous format's transformer_class is read as the transformer's class.
    (folder / "model_index.json").write_text(
        json.dumps({**old, "transformer_class": "XUniterForPreTraining"})
    )
    assert component_class(folder, "transformer").__name__ == "XUniterForPreTraining"
    index = update_model_index(folder)
    assert index["_class_name"] == "PaintPipeline" and "transformer_class" not in index
    assert index["components"]["transformer"] == ["xlxmert", "XUniterForPreTraining"]
    assert index["preset"] == "tiny-test" and index["recipe_hash"] == "0123456789ab"
    assert json.loads((folder / "model_index.json").read_text()) == index


def test_the_transformer_folder_loads_on_its_own(tiny, tmp_path):
    """A ``transformer/`` folder moved away from its model folder still loads (it reads no
    ``../vocabulary/``); the centroids are an argument."""
    alone = tmp_path / "elsewhere" / "t"
    shutil.copytree(tiny / "transformer", alone)
    centroids = VisualVocabulary.from_pretrained(tiny / "vocabulary").centroids
    cls = component_class(tiny, "transformer")
    model = cls.from_pretrained(alone, centroids=centroids).eval()
    reference = load_transformer(tiny).eval()
    ids = torch.randint(5, 20, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    visual = torch.randint(0, centroids.shape[0], (2, model.config.num_cells))
    with torch.no_grad():
        assert torch.equal(
            model(ids, mask, visual_ids=visual).visual_logits,
            reference(ids, mask, visual_ids=visual).visual_logits,
        )
    model.save_pretrained(tmp_path / "resaved")
    assert sorted(p.name for p in (tmp_path / "resaved").iterdir()) == sorted(p.name for p in alone.iterdir())
    assert not (tmp_path / "model_index.json").exists()
