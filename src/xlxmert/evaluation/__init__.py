"""Evaluation: FID, IS, R-precision, semantic accuracy, task accuracies, tables (paper §6, §7, app. E).

- ``evaluator``: the ShapeScenes evaluator network (place, per-pair counts, a centre map decoded
  into a predicted scene); its features are the FID space, its class logits the IS classes.
- ``fidelity``: FID and IS (torchmetrics with a custom feature module), user-supplied feature
  networks (``.pt2``) for real images.
- ``rprecision``: hard negatives, the image–text matching surrogate, R-precision easy/hard.
- ``semantic``: semantic accuracy (an automatic HUMMUS) and caption facts read off an image.
- ``tasks``: VQA score, GQA and NLVR2 accuracy through model-agnostic answer functions, caption
  correctness.
- ``report``: the Table-1 report (JSON, Markdown, figure) with per-model caches; ``train_suite``.
"""
