#!/usr/bin/env bash
# Rebuild the embedded default models under assets/models/ from nothing (no downloads).
#
# Stage "vla" (assets/models/vla-small):
#   1. record scripted-expert demonstrations of the default tasks (noisy execution, clean labels,
#      counterfactual labels for the other objects, every colour object's position): 400 episodes
#      per task, but only 12 of reach, so that the warm start leaves RL room on both tasks,
#      (from the VLA_CAMERA view: front, wrist, or front+wrist side by side, at VLA_IMAGE_SIZE px),
#   2. build an untrained small Qwen2-VL-architecture checkpoint (vla-small preset),
#   3. pretrain its vision tower on simulator labels (which colour is where: vla_rl.vision_pretrain),
#   4. behaviour-clone it on the demonstrations with the counterfactual samples and the grounding
#      loss (the vision tower trained too, at VLA_VISION_LR_SCALE x the learning rate; with
#      VLA_LOCALISATION_WEIGHT > 0 it keeps step 3's loss meanwhile), then two DAgger rounds (on
#      every task but reach), and evaluate it on held-out seeds.
# Stage "prm" (assets/models/prm-small):
#   1. simulator-labelled PRM datasets: perturbed experts (noise levels, decoy targets), and the
#      policy's own rollouts (PRM_POLICY_STATES initial states per task, 4 rollouts each of the vla
#      stage's policy at T = 0.5, as PPO samples it), each with a held-out set from disjoint seeds
#      (by default 112-px frames from the eye-in-hand camera: PRM_CAMERA=wrist PRM_IMAGE_SIZE=112),
#   2. start from a PRM_PRESET checkpoint (vla-small: 7-px patches, 64 image tokens at 112 px;
#      prm-small: 14-px patches, 16) whose vision tower is pretrained here on those
#      frames (or, for frames of the VLA's own camera and size with the vla-small preset, from the vla
#      stage's vision-pretrained checkpoint where its vision_pretrain.json records those frames,
#      pretrained here if that stage did not run), and train
#      it with reward.train_prm
#      (vision tower frozen, grounding loss, relation loss at the answer position with weight
#      PRM_RELATION_WEIGHT, PRM_COLOUR_PERMUTATION of the frames recoloured by a random palette
#      permutation),
#      then train it on in PRM_ROUNDS rounds, each from the PRM before it, on a larger expert set
#      (EPISODES:STEPS per round, at PRM_ROUND_LEARNING_RATE, with the same policy rollouts),
#   3. choose its decision threshold and a causal score window of 1-4 frames for the best F1 on a
#      calibration set (PRM_CALIBRATION_EPISODES expert episodes per task from seeds of their own,
#      recorded with the threshold so that no evaluation uses them),
#   4. evaluate it on the held-out datasets (PRM_HELDOUT_EPISODES expert episodes per task, seeds
#      2,000,000+: frame F1 at its tuned threshold, value-order
#      correlation, ...; on the policy's rollouts, how many frames it calls completed) and
#      install it only if it clears the install floor on the expert set: F1 >= PRM_MIN_F1
#      (0.70) and value-order >= 0.80 (FORCE_INSTALL_PRM=1 installs it regardless). The
#      project's target is F1 >= 0.90; the script reports whether the PRM meets it.
# Stage "calibrate" (the installed PRM_OUT): steps 3 and 4 of stage "prm" for a PRM already built
#   (the calibration and held-out sets rebuilt), installed atomically with its new threshold,
#   window and held-out reports.
# Each model is installed atomically. Deterministic under SEED. Wall times on a 2-core CPU
# machine: see README ("The policy and the embedded models").
#
#   bash scripts/build_default_models.sh                       # both models
#   STAGES=prm bash scripts/build_default_models.sh            # only the PRM
#   STAGES=calibrate bash scripts/build_default_models.sh      # re-choose the installed PRM's threshold and window
#   PRM_ROUNDS= STAGES=prm bash scripts/build_default_models.sh  # the PRM without its rounds (about 100 minutes less)
#   PRM_CONTINUE=assets/models/prm-small PRM_EPISODES=2000 PRM_STEPS=6000 PRM_LEARNING_RATE=3e-4 PRM_ROUNDS= STAGES=prm \
#       bash scripts/build_default_models.sh                   # train the installed PRM on, on a larger expert set
#   THREADS=1 bash scripts/build_default_models.sh              # one torch thread per stage (other jobs share the cores)
#   VLA_CAMERA=front+wrist STAGES=vla VLA_OUT=data/vla-fw bash scripts/build_default_models.sh
#                                                              # a policy that sees the front and the wrist view
#   VLA_IMAGE_SIZE=112 STAGES=vla WORK=data/v112 VLA_OUT=data/v112/vla bash scripts/build_default_models.sh
#                                                              # a policy on 112-px frames (64 image tokens)
#   DEMOS=400 DAGGER_TASKS="reach push" STAGES=vla VLA_OUT=data/vla-strong \
#       bash scripts/build_default_models.sh                   # a warm start near the ceiling on reach (bench/README.md)
#   SFT_STEPS=300 VISION_STEPS=200 DAGGER_ROUNDS=0 VISION_EPISODES=20 DEMOS=50 PRM_STEPS=200 PRM_EPISODES=20 \
#       PRM_CALIBRATION_EPISODES=10 PRM_HELDOUT_EPISODES=10 PRM_POLICY_STATES=4 PRM_CAMERA=front PRM_IMAGE_SIZE=56 bash scripts/build_default_models.sh
#                                                              # quick smoke build (about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
SEED="${SEED:-0}"
STAGES="${STAGES:-vla prm}"
TASKS="${TASKS:-reach push}"
WORK="${WORK:-data/default_models}"
DEMOS="${DEMOS:-reach=12 400}"          # VLA: expert episodes per task: task=N entries, and a bare N for the tasks not named
                                        # (default: 12 for reach, so that it keeps room for RL, 400 for the others)
SFT_STEPS="${SFT_STEPS:-3000}"
VISION_STEPS="${VISION_STEPS:-6000}"
DAGGER_ROUNDS="${DAGGER_ROUNDS:-2}"        # VLA: DAgger rounds after cloning (100 policy episodes per task, 1,000 steps each)
default_dagger_tasks=$(for task in $TASKS; do [ "$task" = reach ] || echo "$task"; done)
DAGGER_TASKS="${DAGGER_TASKS:-${default_dagger_tasks:-$TASKS}}"  # VLA: the tasks whose policy episodes DAgger labels
                                        # (default: all but reach, which keeps room for RL)
VISION_EPISODES="${VISION_EPISODES:-300}"   # VLA vision pretraining: noisy-expert episodes per task
VLA_VISION_LR_SCALE="${VLA_VISION_LR_SCALE:-1}"  # VLA cloning: vision tower learning rate / the rest's (0 freezes it)
VLA_LOCALISATION_WEIGHT="${VLA_LOCALISATION_WEIGHT:-0}"  # VLA cloning: weight of vision pretraining's loss kept on the tower
EVAL_EPISODES="${EVAL_EPISODES:-50}"
THREADS="${THREADS:-}"                  # torch CPU threads per stage (empty: torch's default, one per core)
VLA_OUT="${VLA_OUT:-assets/models/vla-small}"
PRM_EPISODES="${PRM_EPISODES:-250}"     # PRM: expert episodes per task
PRM_HELDOUT_EPISODES="${PRM_HELDOUT_EPISODES:-250}"  # PRM: held-out expert episodes per task (its reported F1)
PRM_CALIBRATION_EPISODES="${PRM_CALIBRATION_EPISODES:-250}"  # PRM: expert episodes per task that choose its threshold
PRM_STEPS="${PRM_STEPS:-3000}"
PRM_OUT="${PRM_OUT:-assets/models/prm-small}"
VLA_IMAGE_SIZE="${VLA_IMAGE_SIZE:-56}"   # VLA frame side (a multiple of 14; 7-px patches: 16 image tokens at 56 px, 64 at 112)
PRM_IMAGE_SIZE="${PRM_IMAGE_SIZE:-112}"  # PRM frame side (the VLA's size and camera share its vision tower)
PRM_PRESET="${PRM_PRESET:-vla-small}"   # PRM architecture: vla-small (7-px patches) | prm-small (14-px patches)
VLA_CAMERA="${VLA_CAMERA:-front}"       # VLA view: front | wrist (eye in hand) | front+wrist (both side by side)
PRM_CAMERA="${PRM_CAMERA:-wrist}"       # PRM frames: wrist (eye in hand) | front | front+wrist (its own vision tower unless VLA_CAMERA's at VLA_IMAGE_SIZE)
PRM_COLOUR_PERMUTATION="${PRM_COLOUR_PERMUTATION:-0.5}"  # fraction of PRM training frames recoloured (reward.augment)
PRM_RELATION_WEIGHT="${PRM_RELATION_WEIGHT:-1}"  # PRM relation loss at the answer position (vla_rl.grounding)
PRM_MIN_F1="${PRM_MIN_F1:-0.70}"       # PRM install floor: held-out frame F1 (the target is 0.90)
PRM_CONTINUE="${PRM_CONTINUE:-}"        # PRM: a trained PRM to train on from (empty: a vision-pretrained checkpoint)
PRM_LEARNING_RATE="${PRM_LEARNING_RATE:-}"  # PRM training learning rate (empty: reward.train_prm's, 1e-3)
PRM_ROUNDS="${PRM_ROUNDS-500:1000 1000:2000 2000:6000}"  # PRM: rounds trained on from the PRM before, "EPISODES:STEPS" each (empty: none)
PRM_ROUND_LEARNING_RATE="${PRM_ROUND_LEARNING_RATE:-3e-4}"  # PRM: learning rate of those rounds
PRM_POLICY_STATES="${PRM_POLICY_STATES:-60}"  # PRM: initial states per task of policy rollouts (0: expert data only)
HELDOUT_SEED=2000000                    # far from the training seeds and from policy evaluation (1,000,000+)
POLICY_SEED=500000                      # PRM policy-rollout states; held out: POLICY_HELDOUT_SEED
POLICY_HELDOUT_SEED=2200000
CALIBRATION_SEED=4000000                # the PRM's calibration set (threshold and score window)
if [ ! -x "$PYTHON" ]; then
    echo "error: $PYTHON not found; run 'bash scripts/setup.sh' first." >&2
    exit 2
fi
for stage in $STAGES; do
    case "$stage" in vla|prm|calibrate) ;;
        *) echo "error: STAGES may hold 'vla', 'prm' and 'calibrate', got '$stage'." >&2; exit 2 ;; esac
done
case "$PRM_PRESET" in vla-small|prm-small) ;;
    *) echo "error: PRM_PRESET must be vla-small (7-px patches) or prm-small (14-px patches), got '$PRM_PRESET'." >&2
       exit 2 ;; esac
for size in VLA_IMAGE_SIZE PRM_IMAGE_SIZE; do
    if ! [[ "${!size}" =~ ^[1-9][0-9]*$ ]] || [ $(( ${!size} % 14 )) -ne 0 ]; then
        echo "error: $size must be a frame side in pixels that is a multiple of 14 (56, 112, ...), got '${!size}'." >&2
        exit 2
    fi
done
for view in VLA_CAMERA PRM_CAMERA; do
    case "${!view}" in front|wrist|front+wrist) ;;
        *) echo "error: $view must be front, wrist or front+wrist, got '${!view}'." >&2; exit 2 ;; esac
done
demos_for() {  # demos_for TASK: the expert episodes DEMOS gives TASK (its own entry, else a bare N)
    local entry bare=""
    for entry in $DEMOS; do
        case "$entry" in "$1="*) echo "${entry#*=}"; return ;; *=*) ;; *) bare="$entry" ;; esac
    done
    echo "$bare"
}
for task in $TASKS; do
    if ! [[ "$(demos_for "$task")" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: DEMOS must give every task of TASKS ($TASKS) a whole number of episodes >= 1, as task=N" \
            "entries and a bare N for the rest (DEMOS=\"reach=12 400\"); got DEMOS='$DEMOS' for $task." >&2
        exit 2
    fi
done
if [ -z "${DAGGER_TASKS// /}" ]; then
    echo "error: DAGGER_TASKS must name at least one task of TASKS ($TASKS); DAGGER_ROUNDS=0 turns DAgger off." >&2
    exit 2
fi
for task in $DAGGER_TASKS; do
    if [[ " $TASKS " != *" $task "* ]]; then
        echo "error: DAGGER_TASKS may only name tasks of TASKS ($TASKS), got '$task'." >&2
        exit 2
    fi
done
if [ -n "$PRM_CONTINUE" ] && [ ! -f "$PRM_CONTINUE/prm_config.json" ]; then
    echo "error: PRM_CONTINUE must name a trained PRM (a directory with prm_config.json), got '$PRM_CONTINUE'." >&2
    exit 2
fi
for rate in PRM_LEARNING_RATE PRM_ROUND_LEARNING_RATE; do
    if [ -n "${!rate}" ] && ! [[ "${!rate}" =~ ^[0-9]*[.]?[0-9]+([eE]-?[0-9]+)?$ ]]; then
        echo "error: $rate must be a positive number (3e-4), got '${!rate}'." >&2
        exit 2
    fi
done
if ! [[ "$PRM_POLICY_STATES" =~ ^[0-9]+$ ]] || [ "$PRM_POLICY_STATES" -eq 1 ]; then
    echo "error: PRM_POLICY_STATES must be 0 (no policy rollouts) or a whole number >= 2 (each task needs a" \
        "training and a validation state), got '$PRM_POLICY_STATES'." >&2
    exit 2
fi
require_number() {  # require_number NAME MEANING_OF_0: the variable NAME must be a number >= 0
    if ! [[ "${!1}" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
        echo "error: $1 must be a number >= 0 ($2), got '${!1}'." >&2
        exit 2
    fi
}
require_number VLA_LOCALISATION_WEIGHT "0: off"
require_number VLA_VISION_LR_SCALE "0 freezes the vision tower in cloning"
if [ -n "$THREADS" ]; then
    if ! [[ "$THREADS" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: THREADS must be a whole number >= 1 (torch CPU threads per stage), got '$THREADS'." >&2
        exit 2
    fi
    export OMP_NUM_THREADS="$THREADS"  # every stage's torch reads it at start-up
elif [ -r /proc/loadavg ]; then
    # Torch's default of one thread per core oversubscribes cores that other jobs already use
    # (a load of half the cores or more, at least 1).
    read -r load _ < /proc/loadavg
    cores=$(nproc)
    if awk -v load="$load" -v cores="$cores" 'BEGIN { exit !(load >= (cores > 2 ? cores / 2 : 1)) }'; then
        echo "warning: other processes keep the CPU busy (1-minute load $load on $cores cores); torch's" \
            "default of one thread per core then oversubscribes the cores and the build runs many times" \
            "slower. Stop them, or set THREADS (THREADS=1 bash scripts/build_default_models.sh)." >&2
    fi
fi
if [[ " $STAGES " == *" prm "* || " $STAGES " == *" calibrate "* ]] && [[ " $STAGES " != *" vla "* ]] \
    && [ "$PRM_POLICY_STATES" -gt 0 ] && [ ! -f "$VLA_OUT/config.json" ]; then
    echo "error: the PRM's policy rollouts need the policy $VLA_OUT; build it (STAGES=\"vla prm\")," \
        "or set PRM_POLICY_STATES=0." >&2
    exit 2
fi
if [[ " $STAGES " == *" calibrate "* && " $STAGES " != *" prm "* ]] && [ ! -f "$PRM_OUT/prm_config.json" ]; then
    echo "error: STAGES=calibrate re-chooses the threshold of an installed PRM, and $PRM_OUT holds none" \
        "(no prm_config.json); build it with STAGES=prm, or set PRM_OUT." >&2
    exit 2
fi
for round in $PRM_ROUNDS; do
    if ! [[ "$round" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]]; then
        echo "error: PRM_ROUNDS takes rounds written EPISODES:STEPS (expert episodes per task, training steps)," \
            "separated by spaces, e.g. PRM_ROUNDS=\"500:1000 1000:2000\" (empty: none); got '$round'." >&2
        exit 2
    fi
done
for count in PRM_CALIBRATION_EPISODES PRM_HELDOUT_EPISODES; do
    if ! [[ "${!count}" =~ ^[1-9][0-9]*$ ]] || [ "${!count}" -lt 2 ]; then
        echo "error: $count must be a whole number >= 2 (expert episodes per task), got '${!count}'." >&2
        exit 2
    fi
done
expert_set() {  # expert_set EPISODES SEED OUT: perturbed-expert episodes of the PRM's frames
    "$PYTHON" -m reward.data --method expert --tasks $TASKS --num_samples "$1" --seed "$2" \
        --image_size "$PRM_IMAGE_SIZE" --camera "$PRM_CAMERA" --out "$3" --overwrite
}
evaluation_sets() {  # the calibration set and the held-out sets (expert; the policy's rollouts when used)
    expert_set "$PRM_CALIBRATION_EPISODES" "$CALIBRATION_SEED" "$WORK/prm-calibration"
    expert_set "$PRM_HELDOUT_EPISODES" "$HELDOUT_SEED" "$WORK/prm-heldout"
    if [ "$PRM_POLICY_STATES" -gt 0 ]; then
        heldout_states=$(( (PRM_POLICY_STATES + 4) / 5 ))
        policy_rollouts $(( heldout_states > 2 ? heldout_states : 2 )) "$POLICY_HELDOUT_SEED" "$WORK/prm-policy-heldout"
    fi
}
calibrate_and_evaluate() {  # calibrate_and_evaluate DIR STEP: choose DIR's threshold and window, evaluate, record
    echo "[$2] threshold and score window (1-4 frames) for the best F1 on the calibration set" \
        "($PRM_CALIBRATION_EPISODES expert episodes per task, seeds $CALIBRATION_SEED+)"
    "$PYTHON" -m reward.evaluate_prm --prm_model_name_or_path "$1" --data "$WORK/prm-calibration" --split all \
        --save_threshold True --out "$WORK/prm-calibration-eval"
    echo "[$2] held-out evaluation (the install floor: F1 >= $PRM_MIN_F1 and value-order >= 0.80; target F1 >= 0.90)"
    "$PYTHON" -m reward.evaluate_prm --prm_model_name_or_path "$1" --data "$WORK/prm-heldout" --split all \
        --out "$WORK/prm-eval"
    cp "$WORK/prm-eval/prm_eval.json" "$1/heldout_eval.json"
    rm -f "$1/policy_heldout_eval.json"
    if [ "$PRM_POLICY_STATES" -gt 0 ]; then
        echo "[$2] on the policy's held-out rollouts (few frames are completed: what matters is how many it calls so)"
        "$PYTHON" -m reward.evaluate_prm --prm_model_name_or_path "$1" --data "$WORK/prm-policy-heldout" \
            --split all --out "$WORK/prm-policy-eval"
        cp "$WORK/prm-policy-eval/prm_eval.json" "$1/policy_heldout_eval.json"
    fi
}
prm_train() {  # prm_train INIT OUT STEPS LEARNING_RATE EVAL_STEPS DATA...: reward.train_prm with the build's losses
    local init="$1" out="$2" steps="$3" learning_rate="$4" eval_steps="$5"
    shift 5
    "$PYTHON" -m reward.train_prm --data "$@" --model_name_or_path "$init" \
        --out "$out" --target progress --max_steps "$steps" --batch_size 32 --freeze_vision True \
        --grounding_weight 1 --relation_weight "$PRM_RELATION_WEIGHT" --colour_permutation "$PRM_COLOUR_PERMUTATION" \
        --eval_steps "$eval_steps" --save_steps 1000 ${learning_rate:+--learning_rate "$learning_rate"} \
        --logging_steps 100 --seed "$SEED" --overwrite
}
policy_rollouts() {  # policy_rollouts STATES SEED OUT: 4 rollouts per initial state of $VLA_OUT at T = 0.5
    "$PYTHON" -m reward.data --method policy --vla_path "$VLA_OUT" --tasks $TASKS --num_samples "$1" \
        --num_rollouts 4 --band 0 1 --temperature 0.5 --seed "$2" --image_size "$PRM_IMAGE_SIZE" --camera "$PRM_CAMERA" \
        --out "$3" --overwrite
}
pretrained_tower() {  # pretrained_tower PRESET SIZE CAMERA NAME: an untrained PRESET checkpoint ($WORK/NAME-init)
    # whose vision tower is pretrained on SIZE-px frames of CAMERA ($WORK/NAME-vision)
    "$PYTHON" -m vla_rl.qwen.build --preset "$1" --ordinal-bins --position-frame --seed "$SEED" \
        --out "$WORK/$4-init" --overwrite
    "$PYTHON" -m vla_rl.vision_pretrain --vla_path "$WORK/$4-init" --out "$WORK/$4-vision" --tasks $TASKS \
        --episodes "$VISION_EPISODES" --steps "$VISION_STEPS" --image_size "$2" --camera "$3" --seed "$SEED" --overwrite
}
install_model() {  # install_model SRC DST: replace DST by a copy of SRC, atomically
    rm -rf "$2.tmp" && cp -r "$1" "$2.tmp" && rm -rf "$2.old" && { [ ! -e "$2" ] || mv "$2" "$2.old"; } \
        && mv "$2.tmp" "$2" && rm -rf "$2.old"
}
start=$(date +%s)
mkdir -p "$WORK"
if [[ " $STAGES " == *" vla "* ]]; then
    demo_dirs=()
    for task in $TASKS; do
        episodes=$(demos_for "$task")
        echo "[vla 1/4] expert demonstrations: $episodes episodes of $task at $VLA_IMAGE_SIZE px ($VLA_CAMERA view)"
        "$PYTHON" -m envs.demos --tasks "$task" --episodes "$episodes" --seed "$SEED" --image-size "$VLA_IMAGE_SIZE" \
            --camera "$VLA_CAMERA" --action-noise 0.15 --out "$WORK/demos-$task" --overwrite
        demo_dirs+=("$WORK/demos-$task")
    done
    echo "[vla 2/4] untrained vla-small checkpoint; [vla 3/4] vision pretraining ($VISION_STEPS steps on" \
        "$VISION_EPISODES episodes per task)"
    pretrained_tower vla-small "$VLA_IMAGE_SIZE" "$VLA_CAMERA" vla
    echo "[vla 4/4] behaviour cloning ($SFT_STEPS steps, counterfactual samples, grounding loss, vision tower at" \
        "${VLA_VISION_LR_SCALE}x the learning rate) + closed-loop eval" \
        "on $EVAL_EPISODES held-out seeds per task"
    "$PYTHON" -m vla_rl.sft --data "${demo_dirs[@]}" --vla_path "$WORK/vla-vision" --out "$VLA_OUT" --steps "$SFT_STEPS" \
        --vision_lr_scale "$VLA_VISION_LR_SCALE" --localisation_weight "$VLA_LOCALISATION_WEIGHT" --relabel True --grounding_weight 1 --dagger_rounds "$DAGGER_ROUNDS" --dagger_episodes 100 \
        --dagger_tasks $DAGGER_TASKS --dagger_steps 1000 --seed "$SEED" --eval_episodes "$EVAL_EPISODES" --overwrite
    echo "built $VLA_OUT in $(( $(date +%s) - start )) s ($(du -sh "$VLA_OUT" | cut -f1))"
fi
if [[ " $STAGES " == *" prm "* ]]; then
    prm_start=$(date +%s)
    echo "[prm 1/5] PRM datasets: $PRM_EPISODES perturbed-expert episodes per task at $PRM_IMAGE_SIZE px from the" \
        "$PRM_CAMERA camera (with PRM_POLICY_STATES > 0: the policy's own rollouts, $PRM_POLICY_STATES initial" \
        "states per task, 4 rollouts each of $VLA_OUT at T = 0.5), a calibration set and held-out sets"
    expert_set "$PRM_EPISODES" "$SEED" "$WORK/prm-data"
    PRM_DATA=("$WORK/prm-data")
    if [ "$PRM_POLICY_STATES" -gt 0 ]; then
        policy_rollouts "$PRM_POLICY_STATES" "$POLICY_SEED" "$WORK/prm-policy"
        PRM_DATA+=("$WORK/prm-policy")
    fi
    evaluation_sets
    PRM_INIT="$WORK/vla-vision"
    vla_tower=""
    if [ -z "$PRM_CONTINUE" ]; then
        # the vla stage's tower serves only if it was pretrained on the PRM's frames (an earlier build
        # in this WORK may have used another VLA_IMAGE_SIZE or VLA_CAMERA)
        vla_tower=$("$PYTHON" -c 'import sys; from vla_rl.vision_pretrain import pretrained_view as v
view = v(sys.argv[1]); print(f"{view[0]} {view[1]}" if view else "")' "$WORK/vla-vision")  # "SIZE CAMERA", or empty
    fi
    if [ -n "$PRM_CONTINUE" ]; then
        PRM_INIT="$PRM_CONTINUE"
        echo "[prm 2/5] PRM initialisation: the trained PRM $PRM_CONTINUE (PRM_CONTINUE), trained on from there"
    elif [ "$PRM_IMAGE_SIZE" != "$VLA_IMAGE_SIZE" ] || [ "$PRM_CAMERA" != "$VLA_CAMERA" ] || [ "$PRM_PRESET" != vla-small ] \
        || { [ -n "$vla_tower" ] && [ "$vla_tower" != "$PRM_IMAGE_SIZE $PRM_CAMERA" ]; }; then
        PRM_INIT="$WORK/prm-vision"
        echo "[prm 2/5] PRM initialisation: untrained $PRM_PRESET checkpoint + vision pretraining at $PRM_IMAGE_SIZE px" \
            "on the $PRM_CAMERA camera's frames ($VISION_STEPS steps)"
        pretrained_tower "$PRM_PRESET" "$PRM_IMAGE_SIZE" "$PRM_CAMERA" prm
    elif [ -n "$vla_tower" ]; then
        echo "[prm 2/5] PRM initialisation: the vision-pretrained checkpoint of the vla stage ($WORK/vla-vision," \
            "$PRM_IMAGE_SIZE-px $PRM_CAMERA frames)"
    else
        echo "[prm 2/5] PRM initialisation: untrained vla-small checkpoint + vision pretraining ($VISION_STEPS steps)"
        pretrained_tower vla-small "$VLA_IMAGE_SIZE" "$VLA_CAMERA" vla
    fi
    echo "[prm 3/5] PRM training ($PRM_STEPS steps, vision tower frozen, grounding loss, relation loss" \
        "$PRM_RELATION_WEIGHT, colour permutation $PRM_COLOUR_PERMUTATION; target: completion, rising with progress before it)"
    prm_train "$PRM_INIT" "$WORK/prm-run" "$PRM_STEPS" "$PRM_LEARNING_RATE" 1000 "${PRM_DATA[@]}"
    PRM_BUILT="$WORK/prm-run/final_checkpoint"
    round=0
    declare -A round_sets=(["$PRM_EPISODES"]="$WORK/prm-data")  # expert sets made by this build, by episodes per task
    for spec in $PRM_ROUNDS; do
        round=$((round + 1))
        episodes="${spec%%:*}" steps="${spec##*:}"
        echo "[prm 3/5, round $round] $steps more steps from $PRM_BUILT on $episodes expert episodes per task" \
            "(seeds $SEED+) and the same policy rollouts, learning rate $PRM_ROUND_LEARNING_RATE"
        if [ -z "${round_sets[$episodes]:-}" ]; then  # made once per build (one left by an earlier build may differ)
            round_sets[$episodes]="$WORK/prm-data-$episodes"
            expert_set "$episodes" "$SEED" "${round_sets[$episodes]}"
        fi
        round_data="${round_sets[$episodes]}"
        # a round's validation split is large (about 50,000 frames at 2,000 episodes per task: 4-5 minutes
        # per evaluation), so it is evaluated at its start and end only (evaluations leave the weights as they are)
        prm_train "$PRM_BUILT" "$WORK/prm-round$round" "$steps" "$PRM_ROUND_LEARNING_RATE" "$steps" "$round_data" \
            "${PRM_DATA[@]:1}"
        PRM_BUILT="$WORK/prm-round$round/final_checkpoint"
    done
    calibrate_and_evaluate "$PRM_BUILT" "prm 4-5/5"
    if "$PYTHON" -c "import json, sys; r = json.load(open(sys.argv[1])); f1 = r['frame']['f1']; \
print(f'held-out F1 {f1:.3f} at threshold {r[\"threshold\"]:.2f}:', 'meets' if f1 >= 0.9 else 'misses', 'the 0.90 target'); \
sys.exit(0 if f1 >= float(sys.argv[2]) and r['episode']['value_order_correlation'] >= 0.8 else 1)" \
        "$WORK/prm-eval/prm_eval.json" "$PRM_MIN_F1" || [ "${FORCE_INSTALL_PRM:-0}" = 1 ]; then
        install_model "$PRM_BUILT" "$PRM_OUT"
        echo "built $PRM_OUT in $(( $(date +%s) - prm_start )) s ($(du -sh "$PRM_OUT" | cut -f1))"
    else
        echo "the PRM missed its install floor (see $WORK/prm-eval/prm_eval.json); $PRM_OUT left as it was." >&2
        echo "use it explicitly with --prm_model_name_or_path $PRM_BUILT, or install it anyway" >&2
        echo "with FORCE_INSTALL_PRM=1." >&2
    fi
fi
if [[ " $STAGES " == *" calibrate "* ]]; then
    calibrate_start=$(date +%s)
    echo "[calibrate 1/2] the calibration set and held-out sets at $PRM_IMAGE_SIZE px from the $PRM_CAMERA camera"
    evaluation_sets
    rm -rf "$WORK/prm-recalibrated" && cp -r "$PRM_OUT" "$WORK/prm-recalibrated"
    calibrate_and_evaluate "$WORK/prm-recalibrated" "calibrate 2/2"
    install_model "$WORK/prm-recalibrated" "$PRM_OUT"
    echo "calibrated $PRM_OUT in $(( $(date +%s) - calibrate_start )) s"
fi
echo "done in $(( $(date +%s) - start )) s"
