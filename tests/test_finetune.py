"""Fine-tuning on VQA v2, GQA and NLVR2 (issue 20): heads, losses, metrics, runs, resume, errors."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import ANSWERS, build_tiny_model, retokenize
from xlxmert.cli import main
from xlxmert.data.shapes.generate import generate_split
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.metrics.tasks import official_normalize, score_nlvr2, score_vqa, vqa_accuracy
from xlxmert.models.families import load_transformer
from xlxmert.models.heads import (
    NLVR2Head,
    TaskModel,
    build_head,
    init_from_qa_head,
    soft_score_loss,
)
from xlxmert.training.finetune import FinetuneConfig, finetune
from xlxmert.training.finetune_data import load_task_split
from xlxmert.utils.model_folder import read_model_index

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """ShapeScenes at 64 px: train 160, val 60 scenes (each with its questions and statements)."""
    root = tmp_path_factory.mktemp("ft-data")
    generate_split(root, "train", 160, size=64, seed=0, progress=False)
    generate_split(root, "val", 60, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data):
    texts = []
    for task in ("vqa", "nlvr2"):
        texts += load_task_split(data, task, "train").texts
    return retokenize(build_tiny_model(tmp_path_factory.mktemp("ft-model") / "m"), texts)


def _config(task, **kw):
    base = dict(task=task, epochs=4, batch_size=16, lr=1e-3, head_lr=2e-3, checkpoint_every=1000)
    return FinetuneConfig(**{**base, **kw})


# -- heads ------------------------------------------------------------------------------------------
def test_head_shapes_and_initialisation_from_the_qa_head(model_dir):
    transformer = load_transformer(model_dir)
    H = transformer.config.hidden_size
    vqa = build_head("vqa", H, ["no", "purple", "red"])
    assert vqa(torch.randn(5, H)).shape == (5, 3)
    nlvr2 = build_head("nlvr2", H)
    assert nlvr2.config.num_labels == 2 and nlvr2(torch.randn(5, 2 * H)).shape == (5, 2)
    before = vqa.logit_fc[3].weight[1].clone()
    copied = init_from_qa_head(vqa, transformer.answer_head, transformer.answers)
    qa = transformer.answer_head.logit_fc
    assert copied == 2  # "no" and "red" are shared, "purple" is not
    assert torch.equal(vqa.logit_fc[0].weight, qa[0].weight) and torch.equal(vqa.logit_fc[2].bias, qa[2].bias)
    assert torch.equal(vqa.logit_fc[3].weight[0], qa[3].weight[ANSWERS.index("no")])
    assert torch.equal(vqa.logit_fc[3].weight[2], qa[3].weight[ANSWERS.index("red")])
    assert torch.equal(vqa.logit_fc[3].weight[1], before)
    fresh = build_head("vqa", H, ["purple", "pink"])
    assert init_from_qa_head(fresh, transformer.answer_head, transformer.answers) == 0
    assert not torch.equal(fresh.logit_fc[0].weight, qa[0].weight)


def test_soft_score_loss_on_a_hand_made_example():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # sigmoids 0.75, 0.5 / 0.5, 0.5
    target = torch.tensor([[1.0, 1 / 3], [0.0, 2 / 3]])
    row0 = -math.log(0.75) + math.log(2.0)  # any target against p = 0.5 costs ln 2
    row1 = 2 * math.log(2.0)
    assert soft_score_loss(logits, target).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


# -- metrics ----------------------------------------------------------------------------------------
def test_official_vqa_accuracy_on_a_hand_made_ten_answer_example():
    answers = ["red"] * 4 + ["Blue."] * 3 + ["dark blue", "two", "a cat"]
    assert vqa_accuracy("red", answers) == 1.0  # the oracle: 3+ matches in every 9-annotator subset
    # "blue": 3 matches; the 3 subsets without one of them have 2 → 2/3, the other 7 → 1.
    assert vqa_accuracy("blue", answers) == pytest.approx((3 * 2 / 3 + 7) / 10)
    # "2" ("two" after normalisation): 1 match; 9 subsets keep it (1/3), one drops it (0).
    assert vqa_accuracy("2", answers) == pytest.approx(9 / 3 / 10)
    assert vqa_accuracy("Cat!", answers) == pytest.approx(0.3) and vqa_accuracy("dog", answers) == 0.0
    assert [official_normalize(a) for a in ("Two", "a dog.", "dont", "1,000", "2.5", "red-ish")] == [
        "2", "dog", "don't", "1000", "2.5", "red ish",
    ]  # fmt: skip
    records = [{"answers": answers, "question_type": "what color", "answer_type": "other"}] * 2
    result = score_vqa(["red", "dog"], records)
    assert result["score"] == 0.5 and result["per_answer_type"] == {"other": 0.5}


def test_nlvr2_consistency_groups_sentences():
    records = [
        {"identifier": "dev-1-0-0", "sentence": "s", "label": True},
        {"identifier": "dev-1-1-0", "sentence": "s", "label": False},
        {"identifier": "dev-2-0-1", "sentence": "t", "label": True},
    ]
    out = score_nlvr2([True, True, True], records)  # sentence dev-1-*-0 has one wrong pair
    assert out["accuracy"] == pytest.approx(2 / 3) and out["consistency"] == 0.5
    assert out["consistency_groups"] == "identifier"
    shapes = [{"identifier": f"x-{i}-0-0", "sentence": s, "label": True} for i, s in enumerate("aab")]
    out = score_nlvr2([True, False, True], shapes)  # ShapeScenes: grouped by sentence text
    assert out["consistency_groups"] == "sentence text" and out["consistency"] == 0.5


# -- NLVR2 pairing -----------------------------------------------------------------------------------
def test_nlvr2_pairs_each_sentence_with_its_left_and_right_image(data, model_dir):
    split = load_task_split(data, "nlvr2", "train")
    lines = [json.loads(x) for x in (data / "train" / "nlvr2_train.jsonl").read_text().splitlines()]
    for k in (0, 7, 33):
        left, right = split.images[split.rows[k, 0]], split.images[split.rows[k, 1]]
        assert (left.name, right.name) == (Path(lines[k]["left_url"]).name, Path(lines[k]["right_url"]).name)
    transformer = load_transformer(model_dir).eval()
    head = build_head("nlvr2", transformer.config.hidden_size).eval()
    model = TaskModel(transformer, head)
    ids, mask = torch.randint(5, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    visual = torch.randint(0, 16, (2, 2, 16))
    with torch.no_grad():
        logits = model(ids, mask, visual)
        left = model.pooled(ids, mask, visual[:, 0])
        right = model.pooled(ids, mask, visual[:, 1])
        assert torch.allclose(logits, head(NLVR2Head.pair(left, right)), atol=1e-5)
        assert not torch.allclose(logits, model(ids, mask, visual.flip(1)), atol=1e-4)


# -- fine-tuning runs --------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["vqa", "gqa", "nlvr2"])
def test_tiny_finetuning_beats_the_majority_answer(task, data, model_dir, tmp_path):
    epochs = {"vqa": 3, "gqa": 6, "nlvr2": 8}[task]
    report = finetune(model_dir, data, tmp_path / "ft", _config(task, epochs=epochs), progress=False)
    key = "score" if task == "vqa" else "accuracy"
    val = report["val"]
    assert val[key] > val["baselines"]["majority_answer"] + 0.05, (val[key], val["baselines"])
    assert val["n"] == len(load_task_split(data, task, "val"))
    assert read_model_index(tmp_path / "ft")["heads"][task][1] in ("VQAHead", "GQAHead", "NLVR2Head")
    assert len(report["history"]) == epochs and report["best_val"] == max(h["val"] for h in report["history"])


def _losses(run: Path) -> list[tuple[int, str]]:
    with (run / "finetune-vqa" / "metrics.csv").open() as f:
        return [(int(r[0]), r[3]) for r in csv.reader(f) if r[0] != "step" and r[2] == "loss"]


def test_exact_resume_repeats_the_uninterrupted_losses(data, model_dir, tmp_path):
    config = _config("vqa", epochs=2, max_train=96, max_eval=16, checkpoint_every=3)
    finetune(model_dir, data, tmp_path / "a", config, progress=False)
    assert finetune(model_dir, data, tmp_path / "b", config, progress=False, stop_after=5) == {
        "stopped_at": 5
    }
    assert len(_losses(tmp_path / "b")) == 5
    finetune(model_dir, data, tmp_path / "b", config, progress=False)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b") and len(_losses(tmp_path / "a")) == 12
    with pytest.raises(XLXMERTError, match="other settings"):
        finetune(
            model_dir, data, tmp_path / "b", _config("vqa", epochs=2, max_train=96, seed=1), progress=False
        )


def test_cli_finetune_then_answer_and_verify_use_the_heads(data, model_dir, tmp_path, capsys):
    out = tmp_path / "ft"
    common = ["--model", str(model_dir), "--data", str(data), "--out", str(out), "--quiet", "--max-eval", "8"]
    assert main(["finetune", "--task", "vqa", "--epochs", "1", "--max-train", "32", *common]) == 0
    assert main(["finetune", "--task", "nlvr2", "--epochs", "1", "--max-train", "16", "--bf16", *common]) == 0
    assert "majority answer" in capsys.readouterr().out
    from xlxmert.pipelines import AnswerPipeline, NLVR2Pipeline

    answerer = AnswerPipeline.from_pretrained(out)
    assert answerer.head is not None and answerer.answers == answerer.head.answers
    image = data / "val" / "images" / "shapes_val_000001.png"
    assert main(["answer", str(image), "how many circles are there", "--model", str(out)]) == 0
    assert capsys.readouterr().out.split("\t")[0] in answerer.head.answers
    out_v = NLVR2Pipeline.from_pretrained(out)([Image.open(image)] * 2, [Image.open(image)] * 2, ["a", "b"])
    assert len(out_v.labels) == 2 and all(0.0 <= p <= 1.0 for p in out_v.probabilities)
    assert out_v.labels == [p > 0.5 for p in out_v.probabilities]
    assert (
        main(["verify", str(image), str(image), "both images contain a red object", "--model", str(out)]) == 0
    )
    label, prob = capsys.readouterr().out.split()
    assert label in ("True", "False") and 0.0 <= float(prob) <= 1.0
    # xlxmert evaluate's understanding columns come from the heads, the baselines beside them
    from xlxmert.evaluation.render import markdown_report
    from xlxmert.evaluation.report import EvaluationConfig, _task_scores

    scores = _task_scores(out, data, [], ("vqa", "nlvr2"), EvaluationConfig(split="val", n=8), False)
    assert 0.0 <= scores["vqa"] <= 1.0 and 0.0 <= scores["nlvr2"] <= 1.0
    assert scores["nlvr2_majority_answer"] == pytest.approx(0.5)  # 8 statements, labels alternate
    table = markdown_report({"config": {"split": "val", "sampler": "random", "steps": 1, "seed": 0},
                             "num_images": 8, "rows": [{"name": "ft", "scores": scores}]})  # fmt: skip
    assert "| majority answer |" in table and "| question only |" in table
    # the folder's own transformer stays the pretrained one (painting is unchanged)
    pretrained = load_transformer(model_dir).state_dict()
    assert all(torch.equal(v, pretrained[k]) for k, v in load_transformer(out).state_dict().items())


# -- official layouts --------------------------------------------------------------------------------
def _official_layout(root: Path) -> Path:
    """The fixtures under their official names, with small images where the real ones would be."""
    root.mkdir(parents=True)
    for f in (FIXTURES / "vqa").iterdir():
        shutil.copy(f, root / f.name)
    shutil.copy(FIXTURES / "gqa" / "train_balanced_questions.json", root)
    shutil.copy(FIXTURES / "nlvr2" / "dev.json", root)
    colours = ["red", "blue", "green", "yellow"]
    (root / "train2014").mkdir()
    for k, q in enumerate(
        json.loads((FIXTURES / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json").read_text())[
            "questions"
        ]
    ):
        Image.new("RGB", (32, 32), colours[k % 4]).save(
            root / "train2014" / f"COCO_train2014_{q['image_id']:012d}.jpg"
        )
    (root / "images").mkdir()
    for q in json.loads((FIXTURES / "gqa" / "train_balanced_questions.json").read_text()).values():
        Image.new("RGB", (32, 32), "blue").save(root / "images" / f"{q['imageId']}.jpg")
    for line in (FIXTURES / "nlvr2" / "dev.json").read_text().splitlines():
        rec = json.loads(line)
        stem = "-".join(rec["identifier"].split("-")[:-1])
        folder = root / "images" / "dev" / str(rec["directory"])
        folder.mkdir(parents=True, exist_ok=True)
        for side, colour in (("img0", "red"), ("img1", "green")):
            Image.new("RGB", (32, 32), colour).save(folder / f"{stem}-{side}.png")
    return root


@pytest.mark.parametrize("task,split", [("vqa", "train2014"), ("gqa", "train"), ("nlvr2", "dev")])
def test_the_same_command_runs_on_the_official_files(task, split, model_dir, tmp_path, capsys):
    root = _official_layout(tmp_path / "official")
    loaded = load_task_split(root, task, split)
    assert len(loaded) == {"vqa": 6, "gqa": 3, "nlvr2": 3}[task]
    if task == "nlvr2":
        assert loaded.images[loaded.rows[0, 0]].name == "dev-850-0-img0.png"
        assert loaded.images[loaded.rows[0, 1]].name == "dev-850-0-img1.png"
    args = [
        "finetune",
        "--task",
        task,
        "--model",
        str(model_dir),
        "--data",
        str(root),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--train-split", split, "--val-split", split, "--epochs", "1", "--quiet"]) == 0
    assert f"{task} " in capsys.readouterr().out


# -- errors ------------------------------------------------------------------------------------------
def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("xlxmert: error:"), err
    for fragment in fragments:
        assert fragment in err, err


def test_one_line_errors(data, model_dir, tmp_path, capsys):
    base = ["finetune", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"]
    broken = tmp_path / "no-transformer"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "transformer")
    _one_line_error(capsys, [*base, "--task", "vqa", "--model", str(broken)], "transformer")
    empty = tmp_path / "empty-data"
    (empty / "train").mkdir(parents=True)
    argv = [
        "finetune",
        "--task",
        "gqa",
        "--model",
        str(model_dir),
        "--data",
        str(empty),
        "--out",
        str(tmp_path),
    ]
    _one_line_error(capsys, argv, "GQA questions", "train")
    vocab = tmp_path / "answers.json"
    vocab.write_text(json.dumps(["banana", "kiwi"]))
    _one_line_error(
        capsys,
        [*base, "--task", "vqa", "--model", str(model_dir), "--answers", str(vocab)],
        "answer vocabulary",
    )
    # a head whose answer list does not fit its outputs
    finetune(
        model_dir, data, tmp_path / "ft", _config("gqa", epochs=1, max_train=16, max_eval=4), progress=False
    )
    (tmp_path / "ft" / "heads" / "gqa" / "answers.json").write_text(json.dumps(["red"]))
    image = data / "val" / "images" / "shapes_val_000001.png"
    _one_line_error(
        capsys,
        ["answer", str(image), "what color", "--model", str(tmp_path / "ft")],
        "answers.json",
        "outputs",
    )
    _one_line_error(capsys, ["verify", str(image), str(image), "x", "--model", str(model_dir)], "nlvr2")
