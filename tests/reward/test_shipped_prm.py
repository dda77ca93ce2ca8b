"""The embedded PRM (`assets/models/prm-small`), which the main job loads by default: its recorded
build figures, and its scores along scripted-expert episodes of held-out seeds."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.experts import make_expert
from reward.prm_metrics import value_order_correlation
from reward.qwen_prm import QwenProcessRM
from vla_rl import keys
from vla_rl.prm_config import DEFAULT_PRM, default_prm

HELDOUT_SEEDS = [2_050_000, 2_050_001, 2_050_002, 2_050_003]  # the build's held-out range, away from its set


def test_the_main_job_defaults_to_the_embedded_prm():
    assert default_prm() == DEFAULT_PRM
    with open(os.path.join(DEFAULT_PRM, "prm_config.json")) as f:
        config = json.load(f)
    assert 0.0 < config["decision_threshold"] < 1.0 and config["image_size"] in (56, 112)
    assert config.get("score_window", 1) in (1, 2, 3, 4)  # the build's train_prm tries 1..4
    with open(os.path.join(DEFAULT_PRM, "heldout_eval.json")) as f:
        heldout = json.load(f)
    # the build script's install floor (scripts/build_default_models.sh)
    assert heldout["frame"]["f1"] >= 0.70 and heldout["episode"]["value_order_correlation"] >= 0.80
    assert heldout["threshold"] == pytest.approx(config["decision_threshold"])
    # the build also scores the policy's own held-out rollouts, which PPO's reward is paid on:
    # seeds disjoint from every training seed, the same threshold, completed frames found, few
    # others called completed. A policy episode ends at its one completed frame, which a causal
    # score window reaches late (and whose score the potential-based reward never uses: the
    # terminal potential is 0), so the frames are found by the unaveraged scores.
    with open(os.path.join(DEFAULT_PRM, "policy_heldout_eval.json")) as f:
        policy = json.load(f)
    assert policy["seed_overlap"] == {} and policy["threshold"] == pytest.approx(config["decision_threshold"])
    found = policy.get("frame_unwindowed", policy["frame"])
    assert policy["frame"]["positives"] > 0 and found["recall"] > 0.5, found
    assert policy["frame"]["accuracy_negative"] > 0.95, policy["frame"]


@pytest.fixture(scope="module")
def prm():
    model = QwenProcessRM(DEFAULT_PRM)
    yield model
    model.close()


def expert_episode(task: str, seed: int, size: int, camera: str) -> tuple[np.ndarray, str, bool]:
    """The frames (``size`` px, from ``camera``) of one noise-free expert episode, its instruction
    and whether it succeeded."""
    env = gym.make(envs.task_id(task), image_size=size, camera=camera)
    try:
        observation, info = env.reset(seed=seed)
        expert = make_expert(env)
        expert.reset()
        frames, instruction = [observation[keys.IMAGE]], info[keys.INSTRUCTION]
        terminated = truncated = False
        while not (terminated or truncated):
            observation, _, terminated, truncated, info = env.step(expert.act())
            frames.append(observation[keys.IMAGE])
        return np.stack(frames), instruction, bool(info[keys.SUCCESS])
    finally:
        env.close()


@pytest.mark.parametrize("task", ["reach", "push"])
def test_scores_rise_along_expert_episodes_to_completion(prm, task):
    firsts, lasts, orders = [], [], []
    for seed in HELDOUT_SEEDS:
        frames, instruction, success = expert_episode(task, seed, prm.image_size, prm.camera or keys.FRONT_CAMERA)
        assert success, f"the {task} expert failed on seed {seed}"
        scores = prm.score(frames, [instruction] * len(frames))  # each frame alone: the episode ends at success
        firsts.append(float(scores[0]))
        lasts.append(float(scores[-1]))
        orders.append(value_order_correlation(scores))
    # the start is "not completed", the completed last frame scores above it, and the scores follow time
    assert max(firsts) < 0.5 and all(last > first for first, last in zip(firsts, lasts, strict=True)), (firsts, lasts)
    assert np.nanmean(orders) > 0.5, orders
    if task == "reach":  # held-out reach F1 is about 0.9: its completed frames are called completed
        assert min(lasts) >= prm.threshold, (lasts, prm.threshold)
