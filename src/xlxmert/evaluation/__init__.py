"""Evaluation: FID, IS, R-precision, semantic accuracy, task accuracies, tables (paper §6, §7, app. E).

By role, each part importing only those listed before it:

- ``split``: one ShapeScenes split as the evaluation reads it (examples, images, one caption each);
  ``negatives``: a caption's category words and the one-word swaps that make it false.
- ``graders/``: the networks that grade images, with their training: ``evaluator`` (the ShapeScenes
  evaluator: its features are the FID space, its class logits the IS classes, its decoded scene
  the facts), ``matcher`` (the image–text matching surrogate of R-precision and semantic accuracy),
  ``matcher_training``.
- ``metrics/``: the scores: ``fidelity`` (FID, IS; user-supplied ``.pt2`` feature networks),
  ``rprecision`` (easy/hard), ``semantic`` (an automatic HUMMUS, caption facts read off an image),
  ``tasks`` (VQA score, GQA and NLVR2 accuracy, caption correctness), ``captions`` (BLEU-4,
  CIDEr-D, grammar checks).
- ``graders/suite``: both graders trained and loaded together from one folder (its training report
  scores the matcher's R-precision).
- The reports: ``report`` runs the Table-1 evaluation (per-model caches, seeds) and ``render``
  writes its table and figure; ``caption_report`` runs and writes ``xlxmert evaluate-captions``.
"""
