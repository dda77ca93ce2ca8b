#!/usr/bin/env bash
# Rebuild the embedded default models under assets/models/ from nothing (no downloads):
#   1. record scripted-expert demonstrations of the default tasks (noisy execution, clean labels),
#   2. build an untrained small Qwen2-VL-architecture checkpoint (vla-small preset),
#   3. behaviour-clone it on the demonstrations and evaluate it on held-out seeds,
#   4. install it as assets/models/vla-small (atomically).
# Deterministic under SEED. Wall time on a 2-core CPU machine: see README ("Embedded models").
#
#   bash scripts/build_default_models.sh                # full build
#   SFT_STEPS=300 DEMOS=50 bash scripts/build_default_models.sh   # a quick smoke build
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
SEED="${SEED:-0}"
DEMOS="${DEMOS:-400}"            # episodes per task
SFT_STEPS="${SFT_STEPS:-3000}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
TASKS="${TASKS:-reach push}"
WORK="${WORK:-data/default_models}"
OUT="${OUT:-assets/models/vla-small}"
if [ ! -x "$PYTHON" ]; then
    echo "error: $PYTHON not found; run 'bash scripts/setup.sh' first." >&2
    exit 2
fi
start=$(date +%s)
mkdir -p "$WORK"
echo "[1/3] expert demonstrations: $DEMOS episodes per task ($TASKS) at 56 px"
"$PYTHON" -m envs.demos --tasks $TASKS --episodes "$DEMOS" --seed "$SEED" --image-size 56 \
    --action-noise 0.15 --out "$WORK/demos" --overwrite
echo "[2/3] untrained vla-small checkpoint"
"$PYTHON" -m vla_rl.qwen.build --preset vla-small --ordinal-bins --position-frame --seed "$SEED" \
    --out "$WORK/vla-init" --overwrite
echo "[3/3] behaviour cloning ($SFT_STEPS steps) + closed-loop eval on $EVAL_EPISODES held-out seeds per task"
"$PYTHON" -m vla_rl.sft --data "$WORK/demos" --vla_path "$WORK/vla-init" --out "$OUT" --steps "$SFT_STEPS" \
    --seed "$SEED" --eval_episodes "$EVAL_EPISODES" --overwrite
echo "built $OUT in $(( $(date +%s) - start )) s ($(du -sh "$OUT" | cut -f1))"
