"""The PPO trainer end to end on the tiny checkpoint: real envs, real model, real files."""

import json
import os
import re

import pytest
import torch

from vla_rl import checkpointing
from vla_rl.checkpointing import latest_checkpoint, resolve_policy_path
from vla_rl.config import parse_config
from vla_rl.evaluate import main as evaluate_main
from vla_rl.trainer import train

pytestmark = pytest.mark.timeout(600)


def small_run(tiny_qwen, root, *extra):
    return parse_config(
        [
            "--vla_path",
            tiny_qwen,
            "--task_ids",
            "reach",
            "--num_envs",
            "2",
            "--num_steps",
            "6",
            "--num_epochs",
            "2",
            "--num_minibatches",
            "2",
            "--local_rollout_forward_batch_size",
            "4",
            "--image_size",
            "56",
            "--max_env_length",
            "5",
            "--total_episodes",
            "1000",
            "--max_iterations",
            "2",
            "--eval_episodes",
            "2",
            "--eval_videos",
            "1",
            "--save_freq",
            "1",
            "--progress",
            "False",
            "--run_root_dir",
            str(root),
            "--exp_name",
            "run",
            "--threads",
            "2",
            *extra,
        ]
    )


def one_rewarded_iteration(tiny_qwen, root, *extra):
    """One iteration with a dense reward (privileged progress), so every update has signal."""
    dense = ["--prm_model_name_or_path", "oracle_progress", "--prm_reward_mode", "prob"]
    return small_run(tiny_qwen, root, "--max_iterations", "1", "--eval_episodes", "0", *dense, *extra)


def test_train_writes_metrics_curve_videos_checkpoints_and_resumes(tiny_qwen, tmp_path, capsys):
    config = small_run(
        tiny_qwen,
        tmp_path,
        "--process_reward_model",
        "True",
        "--prm_model_name_or_path",
        "oracle_progress",
        "--prm_reward_mode",
        "prob",
        "--save_video",
        "True",
        "--video_every",
        "1",
    )
    summary = train(config)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert len(rows) == 2 and rows[-1]["progress/iteration"] == 2
    for key in (
        "rollout/success_rate",
        "rollout/env_return",
        "rollout/prm_score_mean",
        "reward/prm_reward_mean",
        "train/policy_loss",
        "train/value_loss",
        "train/approx_kl",
        "train/clipfrac",
        "perf/env_steps_per_s",
        "perf/share_policy",
    ):
        assert key in rows[-1], key
    # Per-task episode counts, so that per-task success rates can be weighted over iterations.
    finished = [row for row in rows if "rollout/success_rate/reach" in row]
    assert finished and all(row["rollout/episodes/reach"] == row["rollout/episodes"] >= 1 for row in finished)
    # The privileged progress at each episode's end: 1 on success, in [0, 1) otherwise.
    for row in finished:
        assert row["rollout/success_rate/reach"] <= row["rollout/final_progress/reach"] <= 1.0
        assert row["rollout/final_progress/reach"] < 1.0 or row["rollout/success_rate/reach"] == 1.0
    # A rollout-sourced old log-prob: after the first minibatch step the ratio moves off 1.
    assert rows[0]["train/approx_kl"] > 0
    assert (run / "learning_curve.png").stat().st_size > 10_000
    assert list((run / "tensorboard").iterdir())
    assert [p for p in os.listdir(run / "videos") if p.endswith(".mp4")]
    assert summary["eval"]["tasks"]["reach"]["episodes"] == 2
    assert 0.0 <= summary["eval"]["tasks"]["reach"]["mean_final_progress"] <= 1.0
    assert [p for p in os.listdir(run / "eval" / "videos" / "reach") if p.endswith(".mp4")]
    last = latest_checkpoint(str(run))
    assert last.endswith("iter_000002") and os.path.isfile(os.path.join(last, "policy", "model.safetensors"))
    # A run directory or a training checkpoint stands for its policy, in train and in evaluate.
    assert resolve_policy_path(str(run)) == resolve_policy_path(last) == os.path.join(last, "policy")
    assert resolve_policy_path(str(tmp_path / "nowhere")) == str(tmp_path / "nowhere")
    assert "eval        reach: success " in capsys.readouterr().out  # the run's final evaluation, per task
    assert evaluate_main(["--vla_path", str(run), "--episodes", "1", "--num_envs", "1"]) == 0
    out = capsys.readouterr().out  # one line per task, as the run's eval prints, with its interval
    assert re.search(r"       reach: success [01]\.\d{3} over 1 seeds, 95 % CI 0\.\d{3}-[01]\.\d{3} ", out)

    # Resume: same step counter and optimizer state, continues to iteration 3.
    saved = torch.load(os.path.join(last, "trainer_state.pt"), weights_only=False)
    resumed = train(
        small_run(
            tiny_qwen,
            tmp_path,
            "--resume",
            "True",
            "--max_iterations",
            "3",
            "--process_reward_model",
            "False",
            "--eval_episodes",
            "0",
        )
    )
    assert resumed["iteration"] == 3 and resumed["global_step"] > saved["global_step"]
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["progress/iteration"] for r in rows] == [1, 2, 3]


def test_existing_run_needs_resume_and_resume_needs_a_run(tiny_qwen, tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume"):
        train(small_run(tiny_qwen, tmp_path, "--resume", "True"))
    os.makedirs(tmp_path / "run" / "checkpoints")
    with pytest.raises(FileExistsError, match="--resume True"):
        train(small_run(tiny_qwen, tmp_path))


def test_interrupted_checkpoint_write_keeps_the_last_good_one(tiny_qwen, tmp_path, monkeypatch):
    config = small_run(
        tiny_qwen, tmp_path, "--max_iterations", "1", "--eval_episodes", "0", "--process_reward_model", "False"
    )
    train(config)
    good = latest_checkpoint(str(tmp_path / "run"))
    before = sorted(os.listdir(good))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpointing.torch, "save", crash)
    from vla_rl.policy.checkpoint import load_policy

    policy = load_policy(os.path.join(good, "policy"))
    optimizer = torch.optim.AdamW(policy.parameters())
    with pytest.raises(OSError, match="disk full"):
        checkpointing.save_checkpoint(str(tmp_path / "run"), 7, policy, optimizer, {"iteration": 7}, lora=False)
    assert latest_checkpoint(str(tmp_path / "run")) == good and sorted(os.listdir(good)) == before
    assert not [d for d in os.listdir(tmp_path / "run" / "checkpoints") if d.startswith("iter_000007")]


def test_lora_policy_trains_only_adapters(tiny_qwen, tmp_path):
    config = one_rewarded_iteration(tiny_qwen, tmp_path, "--lora_rank", "4", "--learning_rate", "1e-2")
    from vla_rl.policy.checkpoint import load_policy

    base = load_policy(tiny_qwen)
    train(config)
    last = latest_checkpoint(str(tmp_path / "run"))
    assert os.path.isfile(os.path.join(last, "adapter", "adapter_config.json"))
    merged = load_policy(os.path.join(last, "policy"))
    base_vision = dict(base.model.named_parameters())
    changed = [n for n, p in merged.model.named_parameters() if not torch.equal(p, base_vision[n])]
    assert changed and all("language_model" in n for n in changed)
    assert not any("visual" in n for n in changed)


def test_freeze_vision_trains_everything_but_the_vision_tower(tiny_qwen, tmp_path):
    config = one_rewarded_iteration(tiny_qwen, tmp_path, "--freeze_vision", "True", "--learning_rate", "1e-2")
    from vla_rl.policy.checkpoint import load_policy

    base = dict(load_policy(tiny_qwen).model.named_parameters())
    train(config)
    trained = load_policy(os.path.join(latest_checkpoint(str(tmp_path / "run")), "policy"))
    changed = [n for n, p in trained.model.named_parameters() if not torch.equal(p, base[n])]
    assert any("language_model" in n for n in changed)
    assert not any("visual" in n for n in changed)


def test_kl_to_the_frozen_initial_policy_is_logged(tiny_qwen, tmp_path):
    config = one_rewarded_iteration(tiny_qwen, tmp_path, "--kl_coef", "0.1", "--learning_rate", "1e-3")
    train(config)
    row = json.loads(open(tmp_path / "run" / "metrics.jsonl").readline())
    # The first minibatch starts at the reference (KL 0); later ones have moved away from it.
    assert row["train/kl_ref"] > 0


def test_a_rollout_without_any_reward_leaves_the_policy_alone(tiny_qwen, tmp_path):
    """Its advantages are only value error: normalised, they would train the policy on noise."""
    from safetensors.torch import load_file

    moved = {}
    for skip in ("True", "False"):
        root = tmp_path / skip
        train(one_rewarded_iteration(tiny_qwen, root))  # the value head learns non-zero values
        first = load_file(os.path.join(latest_checkpoint(str(root / "run")), "policy", "model.safetensors"))
        flags = ["--resume", "True", "--process_reward_model", "False", "--max_iterations", "2", "--eval_episodes", "0"]
        train(small_run(tiny_qwen, root, *flags, "--skip_rewardless_batches", skip))
        rows = [json.loads(line) for line in open(root / "run" / "metrics.jsonl")]
        assert rows[1]["reward/env_reward_mean"] == 0 and rows[1]["train/rewardless_batch"] == float(skip == "True")
        after = load_file(os.path.join(latest_checkpoint(str(root / "run")), "policy", "model.safetensors"))
        policy_keys = [k for k in first if "value" not in k]
        assert len(policy_keys) > 10
        moved[skip] = sum(not torch.equal(first[k], after[k]) for k in policy_keys)
    assert moved["True"] == 0 and moved["False"] > 0


@pytest.mark.parametrize(
    "estimator, aggregation, credit", [("grpo", "sample", "episode"), ("rloo", "episode", "to_go")]
)
def test_group_relative_advantages_train_on_whole_episodes(tiny_qwen, tmp_path, estimator, aggregation, credit):
    from safetensors.torch import load_file

    flags = ["--advantage_estimator", estimator, "--num_envs", "4", "--group_size", "2", "--group_credit", credit]
    config = one_rewarded_iteration(tiny_qwen, tmp_path, *flags, "--loss_aggregation", aggregation)
    summary = train(config)
    (row,) = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    # One episode per env, to its step limit (5), from one initial state per group of two.
    assert summary["episodes"] == row["rollout/episodes"] == 4 and row["rollout/episode_length"] == 5
    # Dense progress rewards differ between the sampled episodes of a group: every episode has signal.
    assert row["train/episodes_with_signal"] == 1.0 and row["train/rewardless_batch"] == 0
    assert row["train/episodes_with_signal/reach"] == 1.0  # and per task
    assert row["train/approx_kl"] > 0 and row["train/learning_rate"] == config.ppo.learning_rate
    before = load_file(os.path.join(tiny_qwen, "model.safetensors"))
    after = load_file(os.path.join(latest_checkpoint(str(tmp_path / "run")), "policy", "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


@pytest.mark.parametrize("camera", [None, "wrist"])
def test_a_prm_trained_on_another_frame_size_scores_frames_rendered_at_its_size(tiny_qwen, tmp_path, capsys, camera):
    import shutil

    prm = str(tmp_path / "prm28")
    shutil.copytree(tiny_qwen, prm)
    with open(os.path.join(prm, "prm_config.json"), "w") as f:
        json.dump({"image_size": 28, **({"camera": camera} if camera else {})}, f)  # the policy sees 56-px frames
    flags = ["--prm_model_name_or_path", prm, "--prm_reward_mode", "prob", "--max_iterations", "1"]
    videos = ["--save_video", "True", "--video_every", "1", "--max_videos", "1"]
    summary = train(small_run(tiny_qwen, tmp_path, *flags, *videos, "--eval_episodes", "1"))
    assert ("(PRM camera wrist)" in capsys.readouterr().out) == (camera == "wrist")
    # Training videos show the PRM's frames beside the policy's view where they come from another camera.
    import imageio.v2 as imageio

    from reward.video import INSET, PANEL, VIEW

    (name,) = [p for p in os.listdir(tmp_path / "run" / "videos") if p.endswith(".mp4")]
    with imageio.get_reader(str(tmp_path / "run" / "videos" / name)) as reader:
        width = reader.get_data(0).shape[1]
    assert width == VIEW + PANEL + (INSET if camera == "wrist" else 0)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert 0.0 < rows[-1]["rollout/prm_score_mean"] < 1.0  # the PRM refuses any frame but 28 px
    assert [p for p in os.listdir(tmp_path / "run" / "eval" / "videos" / "reach") if p.endswith(".mp4")]
    assert summary["eval"]["tasks"]["reach"]["episodes"] == 1
    with pytest.raises(SystemExit):
        small_run(tiny_qwen, tmp_path / "other", *flags, "--prm_image_size", "56")
    assert "--prm_image_size 56: this PRM was trained on 28-px frames" in capsys.readouterr().err


def test_training_initial_states_are_apart_from_demonstrations_dagger_and_evaluation():
    from vla_rl.seed_ranges import DAGGER, EVALUATION
    from vla_rl.trainer import rollout_seed

    # every run seed up to 99, resumed at any iteration up to 999, on up to 8 ranks, 1,000 initial
    # states per rollout at most: none is a demonstration (0 ..), DAgger or evaluation seed
    firsts = [rollout_seed(s, i, r) for s in range(100) for i in range(0, 1000, 37) for r in range(8)]
    taken = [(0, 100_000), (DAGGER, DAGGER + 100_000), (EVALUATION, EVALUATION + 100_000)]
    assert not [f for f in firsts for lo, hi in taken if f + 1_000 > lo and f < hi]
    assert rollout_seed(0, 0) != rollout_seed(1, 0) != rollout_seed(0, 1) != rollout_seed(0, 0, 1)
