"""PRM dataset generation (real MuJoCo tasks, scripted experts) and the checked reader."""

import json
import os

import numpy as np
import pytest

from reward.data import DataConfig, generate, main
from reward.dataset import episodes_of, load_image, load_rows, read_meta


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("prm") / "expert")
    generate(DataConfig(out=out, tasks=["reach", "push"], num_samples=6, image_size=32, seed=3), progress_bar=False)
    return out


def test_rows_carry_consistent_labels(dataset):
    rows = load_rows(dataset, "train") + load_rows(dataset, "validation")
    for episode in episodes_of(rows).values():
        completion = [r["completion"] for r in episode]
        assert completion == sorted(completion)  # once completed, stays completed
        assert bool(completion[-1]) == episode[0]["episode_success"]
        assert [r["frame"] for r in episode] == list(range(len(episode)))
        if episode[0]["episode_success"]:
            # frames recorded after success still show the completed scene
            assert all(r["success"] for r in episode if r["completion"])
    assert {r["source"].split("-")[0] for r in rows} == {"expert"}
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(rows[0]["image_path"]))
    assert image.shape == (32, 32, 3)


def test_rows_record_where_the_gripper_and_each_colour_are(dataset):
    from envs.scene import COLOUR_NAMES

    rows = load_rows(dataset, "train") + load_rows(dataset, "validation")
    for row in rows:
        assert len(row["colour_positions"]) == len(COLOUR_NAMES) and len(row["gripper"]) == 3
        named = [c for c in COLOUR_NAMES if f" {c} " in f" {row['instruction']} "]
        assert named and all(row["colour_positions"][COLOUR_NAMES.index(c)] is not None for c in named)
    # a completed reach frame has the gripper on the named block, in the same row
    touched = [r for r in rows if r["task"] == "VLARL/Reach-v0" and r["success"]]
    assert touched
    for row in touched:
        colour = row["instruction"].split()[-2]
        block = np.asarray(row["colour_positions"][COLOUR_NAMES.index(colour)])
        assert np.linalg.norm(np.asarray(row["gripper"][:2]) - block[:2]) < 0.03


def test_split_is_by_initial_state_and_recorded_in_meta(dataset):
    meta = read_meta(dataset)
    train, val = load_rows(dataset, "train"), load_rows(dataset, "validation")
    train_keys = {(r["task"], r["seed"]) for r in train}
    val_keys = {(r["task"], r["seed"]) for r in val}
    assert train_keys and val_keys and not train_keys & val_keys
    assert not {r["episode"] for r in train} & {r["episode"] for r in val}
    for task in ("reach", "push"):
        assert set(meta["seeds"]["validation"][task]).isdisjoint(meta["seeds"]["train"][task])
    assert meta["splits"]["train"]["frames"] == len(train)


def test_generation_is_deterministic_and_skip_generation_reuses(dataset, tmp_path):
    again = str(tmp_path / "again")
    generate(DataConfig(out=again, tasks=["reach", "push"], num_samples=6, image_size=32, seed=3), progress_bar=False)
    for split in ("train", "validation"):
        with open(os.path.join(dataset, f"{split}.jsonl")) as a, open(os.path.join(again, f"{split}.jsonl")) as b:
            assert a.read() == b.read()
    before = os.path.getmtime(os.path.join(again, "meta.json"))
    meta = generate(DataConfig(out=again, skip_generation=True), progress_bar=False)
    assert meta["episodes"] == read_meta(dataset)["episodes"]
    assert os.path.getmtime(os.path.join(again, "meta.json")) == before


def _copy(dataset, tmp_path):
    import shutil

    target = str(tmp_path / "copy")
    shutil.copytree(dataset, target)
    return target


def test_missing_image_is_a_clear_error(dataset, tmp_path):
    copy = _copy(dataset, tmp_path)
    first = json.loads(open(os.path.join(copy, "train.jsonl")).readline())
    os.remove(os.path.join(copy, first["image"]))
    with pytest.raises(FileNotFoundError, match=r"train.jsonl:1: image .* is missing"):
        load_rows(copy, "train")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"completion": 2}, "completion must be 0 or 1"),
        ({"completion_token": "?"}, "completion_token must be"),
        ({"he": 0.5}, "he must be"),
        ({"se": 3.0}, "se must be a number"),
        ({"gripper": [0.1, 0.2]}, "gripper must be"),
        ({"colour_positions": [[0.1, 0.2, "x"]]}, "colour_positions must be"),
    ],
)
def test_wrong_labels_are_clear_errors(dataset, tmp_path, change, message):
    copy = _copy(dataset, tmp_path)
    path = os.path.join(copy, "validation.jsonl")
    lines = open(path).read().splitlines()
    row = json.loads(lines[1])
    row.update(change)
    lines[1] = json.dumps(row)
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"validation.jsonl:2: {message}"):
        load_rows(copy, "validation")


def test_token_disagreeing_with_value_is_an_error(dataset, tmp_path):
    copy = _copy(dataset, tmp_path)
    path = os.path.join(copy, "train.jsonl")
    rows = [json.loads(line) for line in open(path)]
    rows[0]["he_token"] = "-" if rows[0]["he"] > 0 else "+"
    open(path, "w").write("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="he_token .* disagrees"):
        load_rows(copy, "train")


def test_bad_flags_fail_before_any_work(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--band", "0.9", "0.2"]) == 2
    assert "--band" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--method", "policy"]) == 2
    assert "--vla_path" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--post_success_motion", "wave"]) == 2
    assert "--post_success_motion" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "nothing"), "--skip_generation", "True"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--camera", "top"]) == 2
    assert "--camera must be one of front, wrist" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--short_stop_fraction", "1.5"]) == 2
    assert "--short_stop_fraction must be in [0, 1]" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--tasks", "stack", "--short_stop_fraction", "0.5"]) == 2
    assert "stack has none" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_wrist_camera_frames_are_the_eye_in_hand_view_of_the_same_episodes(dataset, tmp_path):
    import gymnasium as gym

    import envs
    from vla_rl import keys

    out = str(tmp_path / "wrist")
    generate(
        DataConfig(out=out, tasks=["reach", "push"], num_samples=6, image_size=32, seed=3, camera=keys.WRIST_CAMERA),
        progress_bar=False,
    )
    assert read_meta(out)["camera"] == keys.WRIST_CAMERA and read_meta(dataset)["camera"] == keys.FRONT_CAMERA
    front_rows, wrist_rows = load_rows(dataset, "train"), load_rows(out, "train")
    # the camera changes the frames, not the episodes: the same states and labels
    assert [(r["seed"], r["step"], r["completion"]) for r in front_rows] == [
        (r["seed"], r["step"], r["completion"]) for r in wrist_rows
    ]
    row = wrist_rows[0]
    env = gym.make(envs.task_id(row["task"]), image_size=32, camera=keys.WRIST_CAMERA)
    first = env.reset(seed=row["seed"])[0][keys.IMAGE]
    env.close()
    assert row["step"] == 0
    np.testing.assert_array_equal(load_image(row["image_path"]), first)


def noiseless_config(out: str, **options) -> DataConfig:
    """Six noiseless, decoy-free expert episodes per task (reach, push) of 32-px frames."""
    return DataConfig(
        out=out, tasks=["reach", "push"], num_samples=6, image_size=32, seed=3, noise_levels=[0.0], decoy_fraction=0.0,
        **options,
    )  # fmt: skip


def test_retreat_after_success_keeps_the_scene_completed_while_the_arm_leaves(tmp_path):
    out = str(tmp_path / "retreat")
    config = noiseless_config(out, post_success_motion="retreat")
    generate(config, progress_bar=False)
    rows = load_rows(out, "train") + load_rows(out, "validation")
    rose = 0
    for episode in episodes_of(rows).values():
        done = [r for r in episode if r["completion"]]
        assert all(r["success"] for r in done)
        if episode[0]["task"] == "VLARL/Reach-v0":  # touching is the task: the arm holds instead
            assert "retreat" not in episode[0]["source"]
            assert not done or len(done) == 1 + config.post_success_frames
        elif len(done) >= 4:
            heights = [r["gripper"][2] for r in done]
            assert heights == sorted(heights) and "retreat" in episode[0]["source"]
            rose += heights[-1] - heights[0] > 0.05
    assert rose >= 1  # at least one episode shows the finished scene with the gripper well above it


def test_short_stops_end_just_outside_the_tolerance_and_hold_still(dataset, tmp_path):
    """Near misses that look almost completed: the noiseless expert stops once the goal distance
    is under tolerance + a draw from the margin, or one step before it would complete, and the
    last frames show the arm held still."""
    import gymnasium as gym

    import envs

    out = str(tmp_path / "short")
    config = noiseless_config(out, short_stop_fraction=1.0, post_success_motion="retreat")  # a stop still holds
    generate(config, progress_bar=False)
    rows = load_rows(out, "train") + load_rows(out, "validation")
    stopped = 0
    for episode in episodes_of(rows).values():
        first = episode[0]
        if first["episode_success"]:  # one step past the band, or a block sliding on: the labels say so
            continue
        assert "-short" in first["source"]
        stopped += 1
        env = gym.make(envs.task_id(first["task"]), image_size=16)
        tolerance = env.unwrapped.tolerance
        env.close()
        held = episode[-config.post_success_frames :]
        grippers = np.array([r["gripper"] for r in held])
        assert np.abs(grippers - grippers[0]).max() < 0.01  # the arm holds still
        assert all(r["completion"] == 0 for r in episode)
        # the last frame is a near miss: nearly all progress, within tolerance + margin of the goal
        assert 0.8 < held[-1]["progress"] < 1.0
        if first["task"] == envs.task_id("push"):
            from envs.scene import COLOUR_NAMES

            block, pad = first["instruction"].split("push the ")[1].split(" target")[0].split(" block onto the ")
            positions = np.array(held[-1]["colour_positions"][COLOUR_NAMES.index(block)][:2])
            pad_xy = np.array(held[-1]["colour_positions"][COLOUR_NAMES.index(pad)][:2])
            assert tolerance <= np.linalg.norm(positions - pad_xy) < tolerance + config.short_stop_margin + 0.01
    assert stopped >= 8  # most of the 12 episodes stop short
    # without short stops, the draws (and so the episodes) are the default dataset's
    plain = load_rows(dataset, "train")
    again = str(tmp_path / "again")
    generate(DataConfig(out=again, tasks=["reach", "push"], num_samples=6, image_size=32, seed=3), progress_bar=False)
    assert [(r["seed"], r["source"], r["completion"]) for r in load_rows(again, "train")] == [
        (r["seed"], r["source"], r["completion"]) for r in plain
    ]


def test_decoys_may_take_the_named_block_to_another_destination():
    import gymnasium as gym

    import envs
    from envs.experts import make_expert
    from reward.generators import decoy_target, expert_action

    env = gym.make(envs.task_id("push"), image_size=32)
    try:
        env.reset(seed=4)
        base = env.unwrapped
        rng = np.random.default_rng(0)
        assert {tuple(decoy_target(env, rng)) for _ in range(20)} == {("target_block",)}
        drawn = [decoy_target(env, rng, destinations=True) for _ in range(40)]
        assert {tuple(d) for d in drawn} == {("target_block",), ("target_pad",)}
        assert all(d.get("target_pad", -1) != base.target_pad for d in drawn)
        assert all(d.get("target_block", -1) != base.target_block for d in drawn)
        named = base.target_block, base.target_pad
        expert = make_expert(env, action_noise=0.0, seed=0)
        expert.reset()
        towards_pad = expert_action(expert, env, {"target_pad": (named[1] + 1) % base.num_pads})
        assert (base.target_block, base.target_pad) == named  # restored after planning
        assert towards_pad.shape == (7,)
    finally:
        env.close()


def test_policy_rollouts_with_a_difficulty_band(tiny_qwen, tmp_path):
    """Method 1: sampled rollouts of a policy from the same initial state, kept by failure rate."""
    from envs.scene import COLOUR_NAMES

    config = DataConfig(
        out=str(tmp_path / "policy"),
        method="policy",
        vla_path=tiny_qwen,
        tasks=["reach"],
        num_samples=2,
        num_rollouts=3,
        band=(0.0, 1.0),
        max_env_length=4,
        image_size=56,
        seed=11,
    )
    meta = generate(config, progress_bar=False)
    rows = load_rows(config.out, "train") + load_rows(config.out, "validation")
    episodes = episodes_of(rows)
    assert len(episodes) == 2 * 3 and meta["episodes"] == 6
    by_seed = {}
    for frames in episodes.values():
        assert len(frames) == 5 and frames[0]["source"] == "policy"  # reset frame + 4 steps
        by_seed.setdefault(frames[0]["seed"], []).append(frames)
    assert len(by_seed) == 2 and all(len(v) == 3 for v in by_seed.values())
    for rollouts in by_seed.values():  # the rollouts of one initial state start from the same frame
        first = [np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(r[0]["image_path"])) for r in rollouts]
        assert all(np.array_equal(first[0], f) for f in first[1:])
        # ... and record where each colour's object is, as expert datasets do (for --grounding_weight)
        assert all(r[0]["colour_positions"] == rollouts[0][0]["colour_positions"] for r in rollouts)
    for frames in episodes.values():
        named = [c for c in COLOUR_NAMES if f" {c} " in f" {frames[0]['instruction']} "]
        for row in frames:
            assert len(row["colour_positions"]) == len(COLOUR_NAMES) and len(row["gripper"]) == 3
            assert named and all(row["colour_positions"][COLOUR_NAMES.index(c)] is not None for c in named)
            assert sum(p is not None for p in row["colour_positions"]) == 3  # reach shows three blocks
    # an untrained policy never succeeds: a 30-80 % failure band keeps no initial state
    config = DataConfig(
        out=str(tmp_path / "none"),
        method="policy",
        vla_path=tiny_qwen,
        tasks=["reach"],
        num_samples=1,
        num_rollouts=2,
        max_env_length=3,
        image_size=56,
    )
    with pytest.raises(ValueError, match="failure rate in --band"):
        generate(config, progress_bar=False)
    assert not os.path.exists(config.out)
