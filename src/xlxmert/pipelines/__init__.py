"""Pipelines: the glue from a caption/image to images, captions and answers."""
