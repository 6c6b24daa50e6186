"""The evaluation's scores: ``fidelity`` (FID, IS), ``rprecision`` (easy/hard R-precision),
``semantic`` (semantic accuracy, facts), ``tasks`` (VQA, GQA, NLVR2, caption correctness) and
``captions`` (BLEU-4, CIDEr-D and ShapeScenes' exact caption checks)."""
