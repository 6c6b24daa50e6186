"""The networks that grade images, trained on ShapeScenes only, never on or by the models they grade:
``evaluator`` (scene evaluator: FID/IS features and classes, facts), ``matcher`` (image–text
matching surrogate: R-precision, semantic accuracy), ``matcher_training``, and ``suite`` (both,
trained and loaded together from one folder)."""
