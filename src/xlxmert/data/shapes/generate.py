"""Write one split of ShapeScenes to disk, in the formats of COCO captions, VQA v2, GQA and NLVR2.

Every scene draws from its own seed, derived from (seed, split, index), so the output is
byte-identical for the same arguments however many worker processes render it.
"""

from __future__ import annotations

import json
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from xlxmert.data.shapes.captions import write_captions
from xlxmert.data.shapes.nlvr2 import write_nlvr2
from xlxmert.data.shapes.questions import gqa_records, vqa_records, write_questions
from xlxmert.data.shapes.render import render_scene
from xlxmert.data.shapes.scene import sample_scene, scene_from_json, scene_to_json
from xlxmert.data.shapes.world import IMAGE_SIZES, SPLITS
from xlxmert.errors import XLXMERTError

# Independent random streams of one scene (appended to its seed).
_SCENE, _CAPTIONS, _QUESTIONS, _NLVR2 = range(4)


def scene_seed(seed: int, split: str, index: int) -> int:
    """The seed of scene ``index`` of ``split``: a function of (seed, split, index) only."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])


def image_file_name(split: str, image_id: int) -> str:
    """Path of an image relative to its split folder (as in the captions, scenes and NLVR2 files)."""
    return f"images/shapes_{split}_{image_id:06d}.png"


def _make_one(job: tuple[Path, str, int, int, int]) -> tuple[dict, list[str], list]:
    """Sample, render, save and describe scene ``index``; returns (scene json, captions, questions)."""
    split_dir, split, index, size, seed = job
    s = scene_seed(seed, split, index)
    image_id = index + 1
    scene = sample_scene(np.random.default_rng([s, _SCENE]), split, image_id)
    file_name = image_file_name(split, image_id)
    render_scene(scene, size=size, seed=s).save(split_dir / file_name, format="PNG")
    captions = write_captions(scene, np.random.default_rng([s, _CAPTIONS]))
    questions = write_questions(scene, np.random.default_rng([s, _QUESTIONS]), split)
    return scene_to_json(scene, file_name), captions, questions


def _check_args(root: Path, split: str, n: int, size: int, workers: int) -> Path:
    if split not in SPLITS:
        raise XLXMERTError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise XLXMERTError(f"the number of scenes must be a positive integer, got {n!r}")
    if size not in IMAGE_SIZES:
        raise XLXMERTError(
            f"image size {size} is not supported; choose one of {', '.join(map(str, IMAGE_SIZES))}"
        )
    if workers < 1:
        raise XLXMERTError(f"workers must be at least 1, got {workers}")
    split_dir = root / split
    try:
        (split_dir / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XLXMERTError(
            f"cannot create {split_dir / 'images'} ({exc.strerror}); choose a writable --out"
        ) from None
    if not os.access(split_dir / "images", os.W_OK):
        raise XLXMERTError(f"{split_dir / 'images'} is not writable; choose a writable --out")
    return split_dir


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


def generate_split(
    root: str | Path,
    split: str,
    n: int,
    size: int = 64,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write ``n`` scenes of ``split`` to ``root/<split>/`` and return that folder.

    Files (WORLD.md): ``images/shapes_<split>_<id:06d>.png`` (ids 1..n), ``captions_<split>.json``
    (COCO captions), ``scenes_<split>.json``, ``questions_<split>.json`` and
    ``annotations_<split>.json`` (VQA v2), ``gqa_<split>.json`` (GQA), ``nlvr2_<split>.jsonl``.
    File names inside them are relative to the split folder.
    """
    root = Path(root)
    split_dir = _check_args(root, split, n, size, workers)
    jobs = [(split_dir, split, i, size, seed) for i in range(n)]
    bar = dict(total=n, desc=f"shapes {split}", unit="scene", disable=not progress)
    if workers == 1:
        results = [_make_one(job) for job in tqdm(jobs, **bar)]
    else:
        # imap keeps the jobs' order, so the files do not depend on which worker finished first.
        with get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_make_one, jobs, chunksize=32), **bar))

    # Images left over from an earlier, larger run of this split would not be in the files.
    wanted = {image_file_name(split, i + 1).split("/")[1] for i in range(n)}
    for stale in (split_dir / "images").glob(f"shapes_{split}_*.png"):
        if stale.name not in wanted:
            stale.unlink()

    info = {"description": f"ShapeScenes {split} (spec v1)", "version": "1.0", "contributor": "xlxmert"}
    licenses = [{"id": 0, "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}]
    images, scenes, captions, questions, annotations, gqa = [], [], [], [], [], {}
    for scene_json, caps, qs in results:
        image_id = scene_json["id"]
        images.append(
            {
                "license": 0,
                "file_name": scene_json["file_name"],
                "height": size,
                "width": size,
                "id": image_id,
            }
        )
        scenes.append(scene_json)
        for cap in caps:
            captions.append({"image_id": image_id, "id": len(captions) + 1, "caption": cap})
        q, a = vqa_records(image_id, qs)
        questions += q
        annotations += a
        gqa.update(gqa_records(image_id, qs))

    _dump(
        split_dir / f"captions_{split}.json",
        {"info": info, "licenses": licenses, "images": images, "annotations": captions},
    )
    _dump(split_dir / f"scenes_{split}.json", {"info": info, "images": scenes})
    vqa_head = {"info": info, "license": licenses[0], "data_type": "shapescenes", "data_subtype": split}
    _dump(
        split_dir / f"questions_{split}.json", {**vqa_head, "task_type": "Open-Ended", "questions": questions}
    )
    _dump(split_dir / f"annotations_{split}.json", {**vqa_head, "annotations": annotations})
    _dump(split_dir / f"gqa_{split}.json", gqa)

    nlvr2 = write_nlvr2(
        [scene_from_json(s) for s in scenes],
        [s["file_name"] for s in scenes],
        split,
        lambda i: [scene_seed(seed, split, i), _NLVR2],
    )
    with open(split_dir / f"nlvr2_{split}.jsonl", "w") as f:
        for rec in nlvr2:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return split_dir
