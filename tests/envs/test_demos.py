"""Expert demonstration recording: format, atomic writes, errors."""

import json
import os

import numpy as np
import pytest

from envs import demos


def test_record_and_read_back(tmp_path):
    out = str(tmp_path / "demos")
    meta = demos.record(["reach", "stack"], episodes=2, out=out, seed=5, image_size=32, progress_bar=False)
    assert meta["num_episodes"] == 4 and meta["success_rate"] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["demos"], "no temporary directory may be left behind"
    with open(os.path.join(out, "meta.json")) as f:
        assert json.load(f)["format_version"] == demos.FORMAT_VERSION
    for record, episode in demos.iter_episodes(out):
        steps = record["length"]
        assert episode.images.shape == (steps + 1, 32, 32, 3) and episode.images.dtype == np.uint8
        assert episode.states.shape == (steps + 1, 8) and episode.actions.shape == (steps, 7)
        assert episode.rewards.shape == (steps,) and episode.success.shape == (steps + 1,)
        assert episode.progress.shape == (steps + 1,)
        assert episode.instruction == record["instruction"] and episode.seed == record["seed"]
        assert episode.terminated and episode.success[-1] and episode.progress[-1] == 1.0
        assert episode.rewards.sum() == 1.0
    seeds = [r["seed"] for r in meta["episodes"]]
    assert seeds == [5, 6, 5, 6]


def test_replaying_recorded_actions_reproduces_the_episode(tmp_path, make_env):
    out = str(tmp_path / "demos")
    demos.record(["push"], episodes=1, out=out, seed=11, image_size=32, progress_bar=False)
    ((record, episode),) = list(demos.iter_episodes(out))
    env = make_env("push", image_size=32)
    obs, _ = env.reset(seed=episode.seed)
    np.testing.assert_array_equal(obs["image"], episode.images[0])
    for t, action in enumerate(episode.actions):
        obs, _, terminated, _, _ = env.step(action)
        np.testing.assert_array_equal(obs["state"], episode.states[t + 1])
    assert terminated


def test_existing_output_needs_overwrite(tmp_path):
    out = str(tmp_path / "demos")
    demos.record(["reach"], episodes=1, out=out, image_size=16, progress_bar=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        demos.record(["reach"], episodes=1, out=out, image_size=16, progress_bar=False)
    meta = demos.record(["reach"], episodes=2, out=out, image_size=16, overwrite=True, progress_bar=False)
    assert meta["num_episodes"] == 2 and len(demos.read_meta(out)["episodes"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["demos"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": ["fly"]}, "unknown task"),
        ({"episodes": 0}, "--episodes"),
        ({"image_size": 4}, "--image-size"),
        ({"action_noise": -0.1}, "--action-noise"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, kwargs, message):
    args = {"tasks": ["reach"], "episodes": 1, "out": str(tmp_path / "d"), "image_size": 16, "progress_bar": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        demos.record(**args)
    assert not os.listdir(tmp_path)


def test_reading_a_non_demo_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a demonstration directory"):
        demos.read_meta(str(tmp_path))


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    assert demos.main(["--tasks", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task" in capsys.readouterr().err
