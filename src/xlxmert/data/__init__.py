"""Data: the ShapeScenes world (``data.shapes``), real-format loaders and tokenizers."""
