"""Evaluation: FID, IS, R-precision, semantic accuracy, task accuracies, tables."""
