"""ShapeScenes: the built-in benchmark world (``/work/shared/WORLD.md``, spec v1).

Procedurally rendered scenes of coloured shapes with captions (COCO format), questions (VQA v2 and
GQA formats) and paired-image statements (NLVR2 format). ``world`` holds the constants, ``scene``
the scene graph and its words, ``render`` the pixels, ``captions``/``questions``/``nlvr2`` the
writers, ``facts`` an independent caption checker and ``generate`` the split writer.
"""

from xlxmert.data.shapes.generate import generate_split
from xlxmert.data.shapes.scene import Scene, SceneObject, describe, load_scenes, region_of, relation

__all__ = [
    "Scene",
    "SceneObject",
    "describe",
    "generate_split",
    "load_scenes",
    "region_of",
    "relation",
]
