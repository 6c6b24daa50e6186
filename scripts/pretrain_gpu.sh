#!/usr/bin/env bash
# Pretrain the shapes-64-large transformer on one GPU within a wall-clock budget, as three
# concurrent variants (a small model leaves most of the GPU idle), and keep the best.
#
#   scripts/pretrain_gpu.sh WORK RESULTS BUDGET_S
#
# WORK holds data/{train,val}, vocab/ (config, centroids, ids of train and val) and tokenizer/, as
# written by `xlxmert train-all` (a tarball of them may be given instead: WORK=path.tar.gz).
# Variants: A = the preset (standardized features, lr 5e-4), B = A without feature
# standardization, C = A at lr 1e-3. The step count is calibrated: the three run for ~40 s, their
# slowest rate sets STEPS so that training ends inside the budget; then each trains STEPS steps
# with `xlxmert pretrain --preset shapes-64-large` (the command is printed, for the model card).
# RESULTS gets summary.txt (calibration, the command, each variant's last validation metrics),
# logs.tar.gz (logs and metrics.csv of every variant) and the best variant (by CCC top-5 at mask
# ratio 1.0, i.e. painting from the caption alone) as best.tar.gz, split into 15 MB parts
# (best.tar.gz.part-aa, ...). Env: BATCH (per step, default the preset's),
# PYTHON (default python3), ARGS_A / ARGS_B / ARGS_C (replace a variant's extra `xlxmert pretrain`
# arguments, e.g. ARGS_C="--position-frequencies 5 --ccc-class-balance 0.5 --full-mask-prob 0.3").
set -uo pipefail
WORK=$1 RESULTS=$2 BUDGET=$3
PY=${PYTHON:-python3}
START=$(date +%s)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
if [[ $WORK == *.tar.gz ]]; then
    mkdir -p /tmp/xlxmert-work && tar -xzf "$WORK" -C /tmp/xlxmert-work && WORK=/tmp/xlxmert-work
fi
RUNS=/tmp/xlxmert-runs
rm -rf "$RUNS" && mkdir -p "$RUNS"
EXTRA=()
[[ -n ${BATCH:-} ]] && EXTRA+=(--batch-size "$BATCH")
declare -A ARGS=([A]="${ARGS_A-}" [B]="${ARGS_B---no-standardize-features}" [C]="${ARGS_C---lr 1e-3}")

launch() {  # launch NAME STEPS OUT TIMEOUT
    # shellcheck disable=SC2086
    timeout "$4" $PY -m xlxmert pretrain --preset shapes-64-large --data "$WORK/data" \
        --vocab "$WORK/vocab" --tokenizer "$WORK/tokenizer" --out "$3" --steps "$2" --quiet \
        "${EXTRA[@]}" ${ARGS[$1]} "${@:5}" >"$3.log" 2>&1 &
    PIDS+=($!)
}
calc() { $PY -c "import math; print($1)"; }
last_step() { tail -n 1 "$1/metrics.csv" 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0; }

PIDS=()
# -- calibration: steps/s of each variant while all three run -------------------------------------
for v in A B C; do launch $v 1000000 "$RUNS/cal-$v" 120 --eval-every 1000000 --checkpoint-every 1000000; done
for _ in $(seq 60); do  # wait until every variant has taken a step (data loading done)
    ok=1; for v in A B C; do [[ $(last_step "$RUNS/cal-$v") -gt 0 ]] || ok=0; done
    [[ $ok == 1 ]] && break; sleep 1
done
sleep 5
declare -A S0; for v in A B C; do S0[$v]=$(last_step "$RUNS/cal-$v"); done
T0=$(date +%s.%N); sleep 25; T1=$(date +%s.%N)
RATE=1000000
for v in A B C; do
    r=$(calc "($(last_step "$RUNS/cal-$v") - ${S0[$v]}) / ($T1 - $T0)")
    echo "calibration $v: $r steps/s" | tee -a "$RESULTS/summary.txt"
    RATE=$(calc "min($r, $RATE)")
done
kill "${PIDS[@]}" 2>/dev/null; wait; PIDS=()
# Training gets what is left of the budget, less data loading (~20 s), evaluation and packing (~60 s).
LEFT=$(( BUDGET - ($(date +%s) - START) ))
STEPS=$(calc "int($RATE * ($LEFT - 80) * 0.92)")
(( STEPS < 10 )) && STEPS=10
EVERY=$(( STEPS / 5 > 0 ? STEPS / 5 : 1 ))
echo "steps $STEPS (rate $RATE/s, $LEFT s left); command:" | tee -a "$RESULTS/summary.txt"
echo "  xlxmert pretrain --preset shapes-64-large --steps $STEPS --eval-every $EVERY --checkpoint-every $EVERY ${EXTRA[*]} [variant args]" | tee -a "$RESULTS/summary.txt"

# -- training ------------------------------------------------------------------------------------
for v in A B C; do launch $v "$STEPS" "$RUNS/$v" $(( LEFT - 40 )) --eval-every "$EVERY" --checkpoint-every "$EVERY"; done
wait

# -- results -------------------------------------------------------------------------------------
BEST="" BEST_SCORE=-1
for v in A B C; do
    m=$RUNS/$v/metrics.csv
    done_steps=$(last_step "$RUNS/$v")
    score=$(grep ',val,ccc_top5@1.0,' "$m" 2>/dev/null | tail -n 1 | cut -d, -f4)
    echo "variant $v (${ARGS[$v]:-preset}): $done_steps steps; last val:" | tee -a "$RESULTS/summary.txt"
    grep ',val,' "$m" 2>/dev/null | awk -F, -v s="$(grep ',val,' "$m" | tail -n 1 | cut -d, -f1)" \
        '$1==s {printf "    %s %s\n", $3, $4}' | tee -a "$RESULTS/summary.txt"
    if [[ -n $score && -d $RUNS/$v/transformer ]] && [[ $(calc "$score > $BEST_SCORE") == True ]]; then
        BEST=$v BEST_SCORE=$score
    fi
done
if [[ -n $BEST ]]; then
    echo "best: $BEST (ccc_top5@1.0 $BEST_SCORE)" | tee -a "$RESULTS/summary.txt"
    tar -czf /tmp/best.tar.gz -C "$RUNS/$BEST" transformer metrics.csv pretrain_config.json
    split -b 15M /tmp/best.tar.gz "$RESULTS/best.tar.gz.part-"
fi
tar -czf "$RESULTS/logs.tar.gz" -C "$RUNS" --exclude '*/checkpoints' --exclude '*/transformer' \
    --exclude '*/tokenizer' --exclude '*/vocabulary' --exclude '*/backbone' --exclude '*/tensorboard' .
echo "total $(( $(date +%s) - START )) s" | tee -a "$RESULTS/summary.txt"
