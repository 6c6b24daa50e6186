"""Questions about a scene: VQA v2 questions/annotations and the GQA-format file.

Only unambiguous questions about referable objects (WORLD.md). Per scene: one question of each
type the scene allows (color, shape, count, position, relation, place) and two exist questions,
one answered yes and one answered no, so yes/no is balanced exactly in every split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xlxmert.data.shapes.scene import Scene, SceneObject, describe, region_of, relation
from xlxmert.data.shapes.world import COLORS, HELD_OUT_PAIRS, PLACES, PLURALS, REGIONS, SHAPES, article

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "exist", "position", "relation", "place")
ANSWER_TYPES = {"exist": "yes/no", "count": "number"}  # every other type answers "other"
GQA_TYPES = ("position", "relation")
# Question ids are image_id * QUESTIONS_PER_IMAGE + k, as VQA v2 builds them from image ids.
QUESTIONS_PER_IMAGE = 100


@dataclass(frozen=True)
class Question:
    """One question with its answer; ``type`` in QUESTION_TYPES; ``program`` is GQA's ``semantic``."""

    type: str
    question: str
    answer: str
    full_answer: str
    program: tuple[dict, ...] = ()


def _unique_by(scene: Scene, obj: SceneObject, attrs: tuple[str, ...]) -> bool:
    return sum(all(getattr(o, a) == getattr(obj, a) for a in attrs) for o in scene.objects) == 1


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))] if items else None


def _singled_out(
    scene: Scene, rng: np.random.Generator, attribute_sets: tuple[tuple[str, ...], ...]
) -> tuple[SceneObject, str] | None:
    """A random object that the first matching attribute set describes uniquely, with that
    description ("circle", "large red"), or None when no object can be singled out so."""
    options = []
    for obj in scene.objects:
        for attrs in attribute_sets:
            if _unique_by(scene, obj, attrs):
                options.append((obj, " ".join(getattr(obj, a) for a in attrs)))
                break
    return _pick(rng, options)


def color_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """ "what color is the circle": the object singled out without naming its colour."""
    choice = _singled_out(scene, rng, (("shape",), ("size", "shape")))
    if choice is None:
        return None
    obj, desc = choice
    return Question("color", f"what color is the {desc}", obj.color, f"The {desc} is {obj.color}.")


def shape_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """ "what shape is the red object": the object singled out without naming its shape."""
    choice = _singled_out(scene, rng, (("color",), ("size", "color")))
    if choice is None:
        return None
    obj, desc = choice
    return Question(
        "shape", f"what shape is the {desc} object", obj.shape, f"The {desc} object is a {obj.shape}."
    )


def count_question(scene: Scene, rng: np.random.Generator) -> Question:
    """ "how many circles are there" (half the time a shape the scene has, else any shape)."""
    present = [o.shape for o in scene.objects]
    shape = _pick(rng, present) if rng.random() < 0.5 else _pick(rng, list(SHAPES))
    n = sum(o.shape == shape for o in scene.objects)
    return Question(
        "count", f"how many {PLURALS[shape]} are there", str(n), f"There are {n} {PLURALS[shape]}."
    )


def exist_questions(scene: Scene, rng: np.random.Generator, pairs: list[tuple[str, str]]) -> list[Question]:
    """ "is there a blue star": one answered yes (an object's pair), one no (an absent pair)."""
    obj = _pick(rng, list(scene.objects))
    have = {(o.color, o.shape) for o in scene.objects}
    color, shape = _pick(rng, [p for p in pairs if p not in have])
    return [
        Question(
            "exist",
            f"is there {article(obj.color)} {obj.color} {obj.shape}",
            "yes",
            f"Yes, there is {article(obj.color)} {obj.color} {obj.shape}.",
        ),
        Question(
            "exist", f"is there {article(color)} {color} {shape}", "no", f"No, there is no {color} {shape}."
        ),
    ]


def _select_program(desc: str) -> list[dict]:
    # GQA's semantic program for "the <desc>": select the noun, then filter by each attribute.
    words = desc.split()
    program = [{"operation": "select", "dependencies": [], "argument": words[-1]}]
    for w in reversed(words[:-1]):
        kind = "color" if w in COLORS else "size"
        program.append({"operation": f"filter {kind}", "dependencies": [len(program) - 1], "argument": w})
    return program


def position_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """ "where is the red circle": a referable object outside the dead zones; answer its region."""
    options = [(o, describe(scene, o)) for o in scene.objects]
    options = [(o, d) for o, d in options if d is not None and region_of(o) is not None]
    choice = _pick(rng, options)
    if choice is None:
        return None
    obj, desc = choice
    region = region_of(obj)
    program = _select_program(desc)
    program.append({"operation": "query", "dependencies": [len(program) - 1], "argument": "position"})
    return Question(
        "position", f"where is the {desc}", region, f"The {desc} is {REGIONS[region]}.", tuple(program)
    )


def relation_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """ "what shape is to the left of the blue square": exactly one object stands in that relation."""
    options = []
    for anchor in scene.objects:
        desc = describe(scene, anchor)
        if desc is None:
            continue
        related: dict[str, list[SceneObject]] = {}
        for o in scene.objects:
            rel = relation(o, anchor) if o is not anchor else None
            if rel is not None:
                related.setdefault(rel, []).append(o)
        options += [(objs[0], rel, desc) for rel, objs in related.items() if len(objs) == 1]
    choice = _pick(rng, options)
    if choice is None:
        return None
    target, rel, desc = choice
    program = _select_program(desc)
    program.append({"operation": "relate", "dependencies": [len(program) - 1], "argument": f"_,{rel},s"})
    program.append({"operation": "query", "dependencies": [len(program) - 1], "argument": "shape"})
    return Question(
        "relation",
        f"what shape is {rel} the {desc}",
        target.shape,
        f"The shape {rel} the {desc} is {article(target.shape)} {target.shape}.",
        tuple(program),
    )


def place_question(scene: Scene) -> Question:
    """ "where is this": the place's answer word."""
    return Question("place", "where is this", scene.place, f"This is {PLACES[scene.place].phrase}.")


def exist_pairs(split: str) -> list[tuple[str, str]]:
    """Colour–shape pairs "is there a ..." may name: no held-out pair outside ``compositional``."""
    held = set(HELD_OUT_PAIRS)
    return [(c, s) for c in COLORS for s in SHAPES if split == "compositional" or (c, s) not in held]


def write_questions(scene: Scene, rng: np.random.Generator, split: str) -> list[Question]:
    """The scene's questions, in a fixed type order (ids follow this order)."""
    out = [
        color_question(scene, rng),
        shape_question(scene, rng),
        count_question(scene, rng),
        *exist_questions(scene, rng, exist_pairs(split)),
        position_question(scene, rng),
        relation_question(scene, rng),
        place_question(scene),
    ]
    return [q for q in out if q is not None]


def vqa_records(image_id: int, questions: list[Question]) -> tuple[list[dict], list[dict]]:
    """VQA v2 ``questions`` entries and ``annotations`` entries (10 identical answers each)."""
    qs, anns = [], []
    for k, q in enumerate(questions):
        qid = image_id * QUESTIONS_PER_IMAGE + k
        qs.append({"image_id": image_id, "question": q.question, "question_id": qid})
        anns.append(
            {
                "question_id": qid,
                "image_id": image_id,
                # Our type names (not VQA's question prefixes) so accuracy can be reported per type.
                "question_type": q.type,
                "answer_type": ANSWER_TYPES.get(q.type, "other"),
                "multiple_choice_answer": q.answer,
                "answers": [
                    {"answer": q.answer, "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)
                ],
            }
        )
    return qs, anns


def gqa_records(image_id: int, questions: list[Question]) -> dict[str, dict]:
    """GQA balanced-questions entries (qid → entry) for the position and relation questions."""
    out = {}
    for k, q in enumerate(questions):
        if q.type not in GQA_TYPES:
            continue
        qid = str(image_id * QUESTIONS_PER_IMAGE + k)
        semantic = [dict(step) for step in q.program]
        out[qid] = {
            "imageId": str(image_id),
            "question": q.question,
            "answer": q.answer,
            "fullAnswer": q.full_answer,
            "isBalanced": True,
            "groups": {"global": None, "local": f"{q.type}Query"},
            "entailed": [],
            "equivalent": [qid],
            "types": {
                "structural": "query",
                "semantic": "rel" if q.type == "relation" else "attr",
                "detailed": "relS" if q.type == "relation" else "positionQuery",
            },
            "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
            "semantic": semantic,
            "semanticStr": " [...] ".join(f"{s['operation']}: {s['argument']}" for s in semantic),
        }
    return out
