"""Annotated videos: frame counts, the panel follows the PRM score, failures never raise."""

import logging
import os

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest

import envs
from envs.experts import make_expert
from reward.base import OracleRM
from reward.vector import VectorRewardWrapper
from reward.video import (
    INSET,
    INSET_TOP,
    VIEW,
    RecordAnnotatedVideo,
    VectorRecordAnnotatedVideo,
    VideoSaver,
    compose_frames,
)
from reward.wrapper import RewardWrapper


def _read(path):
    reader = imageio.get_reader(path)
    frames = [frame for frame in reader]
    reader.close()
    return np.stack(frames)


def test_single_env_videos_have_one_frame_per_step_and_informative_names(tmp_path):
    env = RewardWrapper(gym.make("VLARL/Reach-v0", image_size=64), OracleRM("progress"), mode="prob")
    env = gym.wrappers.RecordEpisodeStatistics(RecordAnnotatedVideo(env, str(tmp_path), every=2, fps=12))
    expert = make_expert(env)
    lengths = []
    for seed in range(3):
        env.reset(seed=seed)
        expert.reset()
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, info = env.step(expert.act())
            steps += 1
            done = terminated or truncated
        lengths.append(steps)
        assert "episode" in info  # RecordEpisodeStatistics still sees the episode end
    env.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["episode00000_reach_success.mp4", "episode00002_reach_success.mp4"]
    video = _read(str(tmp_path / names[0]))
    assert len(video) == lengths[0] + 1  # the reset frame plus one per step
    assert video.shape[1:] == (336, 512, 3)


def test_panel_pixels_follow_the_prm_score():
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    steps = [{"t": 0, "score": 0.1}, {"t": 1, "score": 0.1}, {"t": 2, "score": 0.9}]
    video = compose_frames(frames, steps, "touch the red block")
    panel = (slice(0, VIEW), slice(VIEW, None))
    score_rows = slice(110, 150)  # the score line and its bar
    low, high = video[1][panel][score_rows], video[2][panel][score_rows]
    assert np.mean(np.abs(low.astype(int) - high.astype(int))) > 1.0
    green = np.array([60, 200, 90])
    assert np.any(np.all(high == green, axis=-1)) and not np.any(np.all(low == green, axis=-1))


def test_the_prms_own_camera_is_drawn_beside_the_view():
    frames = np.full((2, 32, 32, 3), 90, np.uint8)
    insets = np.full((2, 16, 16, 3), (200, 30, 30), np.uint8)
    steps = [{"t": 0}, {"t": 1}]
    plain, inset = compose_frames(frames, steps, "push"), compose_frames(frames, steps, "push", insets=insets)
    assert inset.shape == (*plain.shape[:2], plain.shape[2] + INSET, 3)
    assert np.array_equal(inset[:, :, : plain.shape[2]], plain)  # the view, panel and strip as they were
    shown = inset[:, INSET_TOP : INSET_TOP + INSET, plain.shape[2] :]
    assert np.all(shown == (200, 30, 30))
    with pytest.raises(ValueError, match="inset frames"):
        compose_frames(frames, steps, "push", insets=insets[:1])


def test_a_two_camera_view_keeps_its_aspect():
    """Frames twice as wide as high (front and wrist side by side) are drawn 2·VIEW wide, each
    half intact, with the panel and the strip beside and under them; an inset likewise."""
    frames = np.zeros((2, 32, 64, 3), np.uint8)
    frames[:, :, :32] = (200, 30, 30)
    frames[:, :, 32:] = (30, 30, 200)
    insets = np.full((2, 16, 32, 3), 90, np.uint8)
    steps = [{"t": 0, "score": 0.2}, {"t": 1, "score": 0.8}]
    video = compose_frames(frames, steps, "push", insets=insets)
    assert video.shape == (2, VIEW + 80, 2 * VIEW + 256 + 2 * INSET, 3)
    assert np.all(video[:, :VIEW, :VIEW] == (200, 30, 30)) and np.all(video[:, :VIEW, VIEW : 2 * VIEW] == (30, 30, 200))
    assert np.all(video[:, INSET_TOP : INSET_TOP + INSET, -2 * INSET :] == 90)
    square = compose_frames(frames[:, :, :32], steps, "push")
    np.testing.assert_array_equal(video[:, :VIEW, 2 * VIEW : 2 * VIEW + 256], square[:, :VIEW, VIEW:])  # the panel


def test_written_video_shows_the_score_change(tmp_path):
    env = RecordAnnotatedVideo(
        RewardWrapper(gym.make("VLARL/PickPlace-v0", image_size=64), OracleRM("success"), mode="binary"),
        str(tmp_path),
    )
    expert = make_expert(env)
    env.reset(seed=1)
    expert.reset()
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(expert.act())
        done = terminated or truncated
    env.close()
    (name,) = os.listdir(tmp_path)
    video = _read(str(tmp_path / name))
    panel_before, panel_after = video[-2, :VIEW, VIEW:], video[-1, :VIEW, VIEW:]
    assert np.mean(np.abs(panel_before.astype(int) - panel_after.astype(int))) > 0.5


def test_vector_recorder_saves_each_sub_env_episode(tmp_path):
    vec = VectorRewardWrapper(envs.make_vector_env("reach", 2, asynchronous=False, image_size=32), OracleRM())
    vec = VectorRecordAnnotatedVideo(vec, str(tmp_path), max_videos=3)
    vec.reset(seed=0)
    limit = envs.TASKS["reach"][2]
    for _ in range(2 * limit + 2):
        vec.step(np.zeros((2, 7), np.float32))
    vec.close()
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and all(n.endswith("_fail.mp4") for n in names)
    assert len(_read(str(tmp_path / names[0]))) == limit + 1


def test_write_failures_are_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the video folder should be")
    saver = VideoSaver(str(blocker / "videos"))
    assert saver.wants()
    with caplog.at_level(logging.WARNING, logger="vla_rl.video"):
        saver.submit([np.zeros((8, 8, 3), np.uint8)] * 2, [{"t": 0}, {"t": 1}], "x", "reach", False)
        saver.close()
    assert saver.failed and "could not write video" in caplog.text


def test_saver_arguments_are_validated():
    for kwargs in ({"every": 0}, {"max_videos": -1}, {"fps": 0}):
        with pytest.raises(ValueError):
            VideoSaver("/tmp/unused", **kwargs)
