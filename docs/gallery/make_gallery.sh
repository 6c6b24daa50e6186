#!/usr/bin/env bash
# Regenerates the README gallery with the shipped default model (run from the repository root).
set -euo pipefail
X=${XLXMERT:-.venv/bin/xlxmert}
OUT=docs/gallery
CAPTIONS=("a red circle to the left of a blue square at night"
          "two green stars in the snow"
          "a yellow triangle above a purple cross on the sand"
          "a large orange diamond in the fog"
          "three shapes at night"
          "a blue star in the top left corner")
# The model's own sampler settings (its sampler/config.json: Random-16, temperature 1, guidance 3).
$X paint "${CAPTIONS[@]}" -o $OUT/paint.png --seed 0
# The same captions with the paper's sampler: Mask-Predict-4, argmax, no guidance.
$X paint "${CAPTIONS[@]}" -o $OUT/paint_paper.png --seed 0 --sampler mask-predict --steps 4 --temperature 0 \
    --guidance-scale 1
$X paint "${CAPTIONS[0]}" -o $OUT/steps.png --strip --seed 0
$X data shapes --out /tmp/xlxmert-gallery --split test --n 4 --seed 7 >/dev/null
cp /tmp/xlxmert-gallery/test/images/shapes_test_000001.png $OUT/scene.png
$X caption $OUT/scene.png > $OUT/caption.txt
for q in "where is this" "how many shapes are there" "what color is the triangle"; do
    $X answer $OUT/scene.png "$q"
done > $OUT/answer.txt
