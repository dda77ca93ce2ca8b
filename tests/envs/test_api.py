"""Gymnasium API, spaces, info contract, rendering and bad input for every built-in task."""

import re

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from vla_rl import keys

TASKS = sorted(envs.TASKS)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id, image_size=64)
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_spaces_and_info_contract(make_env, task):
    env = make_env(task, image_size=96)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert obs[keys.IMAGE].shape == (96, 96, 3) and obs[keys.IMAGE].dtype == np.uint8
    assert obs[keys.STATE].shape == (8,) and obs[keys.STATE].dtype == np.float32
    assert env.action_space.shape == (7,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    instruction = env.unwrapped.instruction
    assert info[keys.INSTRUCTION] == instruction and len(instruction.split()) >= 3
    assert info[keys.SUCCESS] is False and 0.0 <= info[keys.PROGRESS] < 1.0
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward == 0.0 and not terminated
    assert set(info) >= {keys.INSTRUCTION, keys.SUCCESS, keys.PROGRESS}
    assert env.spec.max_episode_steps == envs.TASKS[task][2]


@pytest.mark.parametrize("task", TASKS)
def test_render_returns_the_observation_camera(make_env, task):
    env = make_env(task, image_size=64)
    obs, _ = env.reset(seed=2)
    np.testing.assert_array_equal(env.render(), obs[keys.IMAGE])
    obs, *_ = env.step(np.array([1, 0, -1, 0, 0, 0, 1], np.float32))
    np.testing.assert_array_equal(env.render(), obs[keys.IMAGE])


def test_image_changes_when_the_arm_moves(make_env):
    env = make_env("reach", image_size=64)
    first, _ = env.reset(seed=0)
    moved = first
    for _ in range(5):
        moved, *_ = env.step(np.array([0, 0, -1, 0, 0, 0, 1], np.float32))
    changed = np.any(first[keys.IMAGE] != moved[keys.IMAGE], axis=-1).mean()
    assert changed > 0.005, f"only {changed:.4f} of the pixels changed after moving the arm"


def _named_geoms(env) -> dict[str, list[int]]:
    """Geoms of every object the instruction names."""
    u = env.unwrapped
    named = {"block": [u.blocks.geoms[u.target_block]]}
    if hasattr(u, "target_pad"):
        named["pad"] = [u.pad_geoms[u.target_pad]]
    if hasattr(u, "target_tray"):
        named["tray"] = u.tray_geoms[u.target_tray]
    if hasattr(u, "base_block"):
        named["base block"] = [u.blocks.geoms[u.base_block]]
    return named


@pytest.mark.parametrize("task", TASKS)
def test_named_objects_are_visible(make_env, task):
    """Over many seeds, every object the instruction names covers pixels of the image."""
    env = make_env(task, image_size=128)
    u = env.unwrapped
    for seed in range(25):
        env.reset(seed=seed)
        segmentation = u._renderer.render(u.data, segmentation=True)
        ids, types = segmentation[..., 0], segmentation[..., 1]
        for what, geoms in _named_geoms(env).items():
            pixels = int(np.sum(np.isin(ids, geoms) & (types == mujoco.mjtObj.mjOBJ_GEOM)))
            assert pixels >= 25, f"seed {seed}: the named {what} covers only {pixels} pixels ({u.instruction!r})"


@pytest.mark.parametrize("task", TASKS)
def test_instruction_colours_match_the_scene(make_env, task):
    from envs.scene import PALETTE

    env = make_env(task, image_size=32)
    u = env.unwrapped
    for seed in range(10):
        env.reset(seed=seed)
        colour = u.blocks.colours[u.target_block]
        assert f"the {colour} block" in u.instruction
        np.testing.assert_allclose(u.model.geom_rgba[u.blocks.geoms[u.target_block]], PALETTE[colour])
        assert len(set(u.blocks.colours)) == len(u.blocks.colours), "blocks must have distinct colours"


@pytest.mark.parametrize("size", [16, 64, 256])
def test_image_size_is_configurable(make_env, size):
    obs, _ = make_env("stack", image_size=size).reset(seed=0)
    assert obs[keys.IMAGE].shape == (size, size, 3)


@pytest.mark.parametrize("bad, error", [(8, ValueError), (512, ValueError), (128.0, TypeError), (True, TypeError)])
def test_bad_image_size_is_rejected(bad, error):
    with pytest.raises(error, match="image_size"):
        gym.make("VLARL/Reach-v0", image_size=bad)


def test_prm_image_is_the_same_camera_at_its_own_size(make_env):
    env = make_env("push", image_size=32, prm_image_size=64)
    obs, _ = env.reset(seed=3)
    for _ in range(2):
        assert env.observation_space.contains(obs)
        assert obs[keys.IMAGE].shape == (32, 32, 3) and obs[keys.PRM_IMAGE].shape == (64, 64, 3)
        # the same scene: the PRM frame, averaged down to 32 px, is close to the policy's frame
        pooled = obs[keys.PRM_IMAGE].reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(pooled - obs[keys.IMAGE]).mean() < 12
        obs, *_ = env.step(np.array([0.5, 0, -0.5, 0, 0, 0, 1], np.float32))
    same = make_env("push", image_size=32, prm_image_size=32)
    assert keys.PRM_IMAGE not in same.reset(seed=3)[0]  # nothing to add at the policy's own size


def test_prm_camera_renders_the_wrist_view_beside_the_policy_frame(make_env):
    both = make_env("push", image_size=48, prm_camera=keys.WRIST_CAMERA)
    wrist = make_env("push", image_size=48, camera=keys.WRIST_CAMERA)
    front = make_env("push", image_size=48)
    action = np.array([0.6, 0.3, -0.5, 0, 0, 0.2, 1], np.float32)
    observations = [env.reset(seed=5)[0] for env in (both, wrist, front)]
    for _ in range(3):
        assert both.observation_space.contains(observations[0])
        assert np.array_equal(observations[0][keys.PRM_IMAGE], observations[1][keys.IMAGE])
        assert np.array_equal(observations[0][keys.IMAGE], observations[2][keys.IMAGE])
        assert np.abs(observations[1][keys.IMAGE].astype(int) - observations[2][keys.IMAGE]).mean() > 20
        observations = [env.step(action)[0] for env in (both, wrist, front)]
    assert keys.PRM_IMAGE not in make_env("push", prm_camera=keys.FRONT_CAMERA).reset(seed=0)[0]


def test_front_and_wrist_view_is_both_frames_side_by_side(make_env):
    """``camera="front+wrist"``: the observation is the front frame and the wrist frame side by
    side, as each camera alone renders them; segmentation covers both halves; the PRM's frame can
    be one camera of it."""
    both = make_env("push", image_size=40, camera=keys.FRONT_WRIST, prm_camera=keys.FRONT_CAMERA)
    alone = [make_env("push", image_size=40, camera=camera) for camera in keys.CAMERAS]
    action = np.array([0.6, 0.3, -0.5, 0, 0, 0.2, 1], np.float32)
    observations = [env.reset(seed=6)[0] for env in (both, *alone)]
    for _ in range(2):
        image = observations[0][keys.IMAGE]
        assert image.shape == (40, 80, 3) and both.observation_space.contains(observations[0])
        np.testing.assert_array_equal(image[:, :40], observations[1][keys.IMAGE])
        np.testing.assert_array_equal(image[:, 40:], observations[2][keys.IMAGE])
        np.testing.assert_array_equal(observations[0][keys.PRM_IMAGE], observations[1][keys.IMAGE])
        observations = [env.step(action)[0] for env in (both, *alone)]
    segmentation = both.unwrapped.segmentation()
    assert segmentation.shape == (40, 80)
    np.testing.assert_array_equal(segmentation[:, 40:], alone[1].unwrapped.segmentation())
    blind = make_env("push", image_size=40, camera=keys.FRONT_WRIST, render_obs=False)
    assert blind.reset(seed=0)[0][keys.IMAGE].shape == (40, 80, 3)


def test_wrist_camera_puts_more_pixels_on_the_reached_block(make_env):
    """At reach success the named block lies between the fingers: the eye-in-hand view shows it
    several times larger than the front view does."""
    from envs.experts import make_expert

    pixels = {}
    for camera in keys.CAMERAS:
        env = make_env("reach", image_size=56, camera=camera)
        env.reset(seed=11)
        expert = make_expert(env)
        for _ in range(120):
            *_, terminated, truncated, _ = env.step(expert.act())
            if terminated or truncated:
                break
        assert terminated
        base = env.unwrapped
        pixels[camera] = int((base.segmentation() == base.blocks.geoms[base.target_block]).sum())
    assert pixels[keys.FRONT_CAMERA] > 0
    assert pixels[keys.WRIST_CAMERA] > 3 * pixels[keys.FRONT_CAMERA]  # 65 against 18 pixels here


@pytest.mark.parametrize("argument", ["camera", "prm_camera"])
@pytest.mark.parametrize("name", ["top", "front+top"])
def test_unknown_camera_is_rejected(argument, name):
    with pytest.raises(ValueError, match=rf"{argument}='{re.escape(name)}' is not a camera.*'front', 'wrist'"):
        gym.make("VLARL/Reach-v0", image_size=32, **{argument: name})


@pytest.mark.parametrize("bad, error", [(8, ValueError), (128.0, TypeError)])
def test_bad_prm_image_size_is_rejected(bad, error):
    with pytest.raises(error, match="prm_image_size"):
        gym.make("VLARL/Reach-v0", image_size=32, prm_image_size=bad)


def test_bad_render_mode_is_rejected():
    with pytest.raises(ValueError, match="render_mode"):
        gym.make("VLARL/Reach-v0", render_mode="depth_array")


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(6), "shape"),
        (np.zeros((1, 7)), "shape"),
        (np.array([0, 0, np.nan, 0, 0, 0, 0]), "NaN"),
        (np.array([0, 0, 0, np.inf, 0, 0, 0]), "NaN or inf"),
    ],
)
def test_bad_actions_raise_clear_errors(make_env, action, message):
    env = make_env("pick_place", image_size=32)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.unwrapped.step(action)


def test_out_of_range_actions_are_clipped(make_env):
    env = make_env("reach", image_size=32, render_obs=False)
    env.reset(seed=0)
    start = env.unwrapped.tcp_target
    env.step(np.array([50, 0, 0, 0, 0, 0, 0], np.float32))
    np.testing.assert_allclose(env.unwrapped.tcp_target - start, [0.02, 0, 0], atol=1e-9)


def test_unstable_physics_truncates_with_sim_error(make_env):
    env = make_env("stack", image_size=32)
    env.reset(seed=0)
    env.unwrapped.data.qvel[:] = 1e12  # far beyond what MuJoCo accepts
    obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
    assert truncated and not terminated and reward == 0.0
    assert "MuJoCo warning" in info[keys.SIM_ERROR]
    assert env.observation_space.contains(obs)
    obs, info = env.reset(seed=0)  # the env recovers on reset
    assert keys.SIM_ERROR not in info and env.observation_space.contains(obs)


def test_render_obs_false_gives_blank_images_but_render_works(make_env):
    env = make_env("reach", image_size=32, render_obs=False)
    obs, _ = env.reset(seed=0)
    assert not obs[keys.IMAGE].any()
    assert env.render().any()


@pytest.mark.parametrize("task", TASKS)
def test_task_name_inverts_task_id(task):
    assert envs.task_name(envs.task_id(task)) == task
    assert envs.task_name("VLARL/MetaWorld-v0") == "VLARL/MetaWorld-v0"  # ids without a short name stay as they are
