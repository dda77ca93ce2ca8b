"""The README's five-line usage, on our task and on Gymnasium's Pusher-v5."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

from vla_rl import keys


def test_five_lines_on_our_task(tiny_qwen, tmp_path):
    import envs  # noqa: F401
    from reward import QwenProcessRM, RecordAnnotatedVideo, RewardWrapper

    env = gym.make("VLARL/PickPlace-v0", image_size=112)
    env = RecordAnnotatedVideo(RewardWrapper(env, QwenProcessRM(tiny_qwen), weight=0.1), str(tmp_path))
    env.reset(seed=0)
    for _ in range(3):
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert reward == info[keys.ENV_REWARD] + info[keys.PRM_REWARD] and 0 < info[keys.PRM_SCORE] < 1
    env.unwrapped.data.qvel[:] = 1e12  # end the episode (sim error -> truncation) to write its video
    env.step(np.zeros(7, np.float32))
    env.close()
    assert [name.endswith("_pick_place_fail.mp4") for name in os.listdir(tmp_path)] == [True]


def test_five_lines_on_pusher(tiny_qwen, tmp_path):
    from envs.wrappers import AddInstruction
    from reward import QwenProcessRM, RewardWrapper

    env = AddInstruction(
        gym.make("Pusher-v5", render_mode="rgb_array", width=112, height=112),
        "push the white cylinder onto the red target",
    )
    env = RewardWrapper(env, QwenProcessRM(tiny_qwen), weight=0.1, mode="prob")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert np.isclose(reward, info[keys.ENV_REWARD] + 0.1 * info[keys.PRM_SCORE])
    env.close()


def test_import_reward_is_cheap():
    heavy = "('torch', 'transformers', 'cv2', 'mujoco')"
    code = f"import sys, reward; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
