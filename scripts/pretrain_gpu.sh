#!/usr/bin/env bash
# Pretrain on one GPU within a wall-clock budget, as three concurrent variants (a small model leaves
# most of the GPU idle: each process is bound by its own Python), and bring all three back.
#
#   scripts/pretrain_gpu.sh WORK RESULTS BUDGET_S
#
# WORK holds data/{train,val}, vocab/ (config, centroids, ids of train and val) and tokenizer/, as
# written by `xlxmert train-all` (a tarball of them may be given instead: WORK=path.tar.gz).
# Each variant is `xlxmert pretrain --preset PRESET_X ... ARGS_X`. Defaults: PRESET shapes-64-large
# for all; A = the preset, B = A without feature standardization, C = A at lr 1e-3. Env PRESET_A /
# PRESET_B / PRESET_C and ARGS_A / ARGS_B / ARGS_C replace a variant's preset and extra arguments
# (e.g. ARGS_A="--init models/shapes-64 --batch-size 512 --task-ratio 4,1,1"); BATCH adds
# --batch-size to all; PYTHON (default python3); THREADS = CPU threads per variant (default
# cores / 3).
# The step count is calibrated per variant: the three run side by side for CAL_S seconds (default
# 20) and each one's rate sets its steps so that training ends inside the budget (env STEPS fixes
# them instead); then each trains its steps (the commands are printed, for the model card).
# RESULTS gets summary.txt (calibration, the commands, each variant's last validation metrics),
# logs.tar.gz (logs and metrics.csv of every variant) and, per variant X that finished,
# X.tar.gz (transformer/, metrics.csv, pretrain_config.json), split into 15 MB parts
# (X.tar.gz.part-aa, ...) when larger: the device tool brings back files up to 16 MB.
# Exits 1 early, with the log's tail, when a variant stops in calibration or takes no step in 90 s.
set -uo pipefail
WORK=$1 RESULTS=$2 BUDGET=$3
PY=${PYTHON:-python3}
START=$(date +%s)
THREADS=${THREADS:-$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 ))}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
mkdir -p "$RESULTS"
if [[ $WORK == *.tar.gz ]]; then
    mkdir -p /tmp/xlxmert-work && tar -xzf "$WORK" -C /tmp/xlxmert-work && WORK=/tmp/xlxmert-work
fi
RUNS=/tmp/xlxmert-runs
rm -rf "$RUNS" && mkdir -p "$RUNS"
EXTRA=()
[[ -n ${BATCH:-} ]] && EXTRA+=(--batch-size "$BATCH")
VARIANTS=(A B C)
declare -A ARGS=([A]="${ARGS_A-}" [B]="${ARGS_B---no-standardize-features}" [C]="${ARGS_C---lr 1e-3}")
declare -A PRESETS=([A]="${PRESET_A:-${PRESET:-shapes-64-large}}" [B]="${PRESET_B:-${PRESET:-shapes-64-large}}"
                    [C]="${PRESET_C:-${PRESET:-shapes-64-large}}")

launch() {  # launch NAME STEPS OUT TIMEOUT [more arguments]
    # shellcheck disable=SC2086
    timeout "$4" $PY -m xlxmert pretrain --preset "${PRESETS[$1]}" --data "$WORK/data" \
        --vocab "$WORK/vocab" --tokenizer "$WORK/tokenizer" --out "$3" --steps "$2" --quiet \
        "${EXTRA[@]}" ${ARGS[$1]} "${@:5}" >"$3.log" 2>&1 &
    PIDS+=($!) PID[$1]=$!
}
calc() { $PY -c "import math; print($1)"; }
last_step() { tail -n 1 "$1/metrics.csv" 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0; }
say() { echo "$*" | tee -a "$RESULTS/summary.txt"; }

PIDS=()
declare -A PID
# -- calibration: steps/s of each variant while all three run -------------------------------------
for v in "${VARIANTS[@]}"; do
    launch "$v" 1000000 "$RUNS/cal-$v" 150 --eval-every 1000000 --checkpoint-every 1000000
done
for _ in $(seq 90); do  # wait until every variant has taken a step (data loading done) or one died
    ok=1; for v in "${VARIANTS[@]}"; do [[ $(last_step "$RUNS/cal-$v") -gt 0 ]] || ok=0; done
    dead=0; for v in "${VARIANTS[@]}"; do kill -0 "${PID[$v]}" 2>/dev/null || dead=1; done
    [[ $ok == 1 || $dead == 1 ]] && break; sleep 1
done
for v in "${VARIANTS[@]}"; do  # a stopped variant, else (none stopped) one that took no step
    why=""
    if ! kill -0 "${PID[$v]}" 2>/dev/null; then why="stopped in calibration"
    elif [[ $dead == 0 && $(last_step "$RUNS/cal-$v") == 0 ]]; then why="took no step in 90 s"; fi
    if [[ -n $why ]]; then
        say "variant $v $why; its log ends:"
        tail -n 20 "$RUNS/cal-$v.log" | tee -a "$RESULTS/summary.txt"
        kill "${PIDS[@]}" 2>/dev/null; wait
        exit 1
    fi
done
sleep 3
declare -A S0 RATE STEPS_OF
for v in "${VARIANTS[@]}"; do S0[$v]=$(last_step "$RUNS/cal-$v"); done
T0=$(date +%s.%N); sleep "${CAL_S:-20}"; T1=$(date +%s.%N)
for v in "${VARIANTS[@]}"; do
    RATE[$v]=$(calc "round(($(last_step "$RUNS/cal-$v") - ${S0[$v]}) / ($T1 - $T0), 2)")
    say "calibration $v: ${RATE[$v]} steps/s"
done
kill "${PIDS[@]}" 2>/dev/null; wait; PIDS=()
# Training gets what is left of the budget, less data loading (~20 s), evaluation and packing (~50 s).
LEFT=$(( BUDGET - ($(date +%s) - START) ))
for v in "${VARIANTS[@]}"; do
    STEPS_OF[$v]=${STEPS:-$(calc "max(10, int(${RATE[$v]} * ($LEFT - 70) * 0.92))")}
    every=$(( STEPS_OF[$v] / 5 > 0 ? STEPS_OF[$v] / 5 : 1 ))
    say "variant $v: $LEFT s left; command:"
    say "  xlxmert pretrain --preset ${PRESETS[$v]} --steps ${STEPS_OF[$v]} --eval-every $every" \
        "--checkpoint-every $every ${EXTRA[*]} ${ARGS[$v]}"
    launch "$v" "${STEPS_OF[$v]}" "$RUNS/$v" $(( LEFT - 30 )) --eval-every "$every" --checkpoint-every "$every"
done
wait

# -- results -------------------------------------------------------------------------------------
for v in "${VARIANTS[@]}"; do
    m=$RUNS/$v/metrics.csv
    say "variant $v: $(last_step "$RUNS/$v") of ${STEPS_OF[$v]} steps; last val:"
    grep ',val,' "$m" 2>/dev/null | awk -F, -v s="$(grep ',val,' "$m" | tail -n 1 | cut -d, -f1)" \
        '$1==s {printf "    %s %s\n", $3, $4}' | tee -a "$RESULTS/summary.txt"
    if [[ -d $RUNS/$v/transformer ]]; then
        tar -czf "/tmp/$v.tar.gz" -C "$RUNS/$v" transformer metrics.csv pretrain_config.json
        if (( $(stat -c %s "/tmp/$v.tar.gz") > 15 * 1024 * 1024 )); then
            split -b 15M "/tmp/$v.tar.gz" "$RESULTS/$v.tar.gz.part-"
        else
            cp "/tmp/$v.tar.gz" "$RESULTS/"
        fi
    fi
done
tar -czf "$RESULTS/logs.tar.gz" -C "$RUNS" --exclude '*/checkpoints' --exclude '*/transformer' \
    --exclude '*/tokenizer' --exclude '*/vocabulary' --exclude '*/backbone' --exclude '*/tensorboard' .
say "total $(( $(date +%s) - START )) s"
