#!/usr/bin/env bash
# The main job: PPO fine-tuning of the embedded small VLA in the simulated tasks, with the
# embedded process reward model (assets/models/prm-small) as a potential-based dense reward
# (w * (gamma * p' - p) per step, p = P(completed)), followed by an evaluation on held-out seeds
# with annotated videos. `binary` rewards (p >= threshold) let the policy collect reward where the
# PRM wrongly says "completed"; the potential form pays nothing for staying there. Rollouts
# sample at T = 0.5 with the vision tower fixed (the settings under which PPO raised held-out
# reach success, bench/README.md), and the evaluation samples at the same temperature.
#
#   bash scripts/train_rl_vllm_ray_fsdp_mini.sh                      # the defaults below
#   bash scripts/train_rl_vllm_ray_fsdp_mini.sh --process_reward_model False --exp_name no-prm
#
# Arguments are passed through to `python -m vla_rl.train` (later flags win; --help lists all).
# --use_ray, --rollout_backend and --prm_backend default to auto: Ray env workers and a PRM
# server where Ray is installed and can help (a cluster address, a GPU or >= 4 CPUs), vLLM where
# it is installed and CUDA is present; the run prints what it chose when it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
    echo "error: $PYTHON not found; run 'bash scripts/setup.sh' first (or set PYTHON=/path/to/python)." >&2
    exit 2
fi
export TOKENIZERS_PARALLELISM=false
exec "$PYTHON" -m vla_rl.train \
    --task_suite_name default \
    --process_reward_model True \
    --prm_reward_weight 1.0 \
    --prm_reward_mode potential \
    --temperature 0.5 \
    --freeze_vision True \
    --eval_temperature 0.5 \
    --save_video True \
    --num_envs 8 \
    --num_steps 32 \
    --total_episodes 160 \
    --num_epochs 2 \
    --local_rollout_forward_batch_size 16 \
    --eval_episodes 20 \
    --save_freq 5 \
    --exp_name "mini-$(date +%Y%m%d-%H%M%S)" \
    "$@"
