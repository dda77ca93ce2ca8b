"""The training command line: documented flags verbatim, booleans as values, fast clear errors."""

import subprocess
import sys
import time

import pytest

from vla_rl.cli import str2bool
from vla_rl.config import TASK_SUITES, build_parser, parse_config

DOCUMENTED = [
    "--process_reward_model",
    "--prm_model_name_or_path",
    "--prm_checkpoint_path",
    "--prm_reward_weight",
    "--prm_reward_mode",
    "--save_video",
    "--local_rollout_forward_batch_size",
    "--vla_path",
    "--task_ids",
    "--task_suite_name",
    "--num_steps",
    "--max_env_length",
    "--temperature",
    "--learning_rate",
    "--value_learning_rate",
    "--num_epochs",
    "--total_episodes",
    "--seed",
    "--run_root_dir",
    "--use_wandb",
    "--wandb_offline",
    "--save_freq",
    "--resume",
]


@pytest.mark.parametrize("text,value", [("True", True), ("true", True), ("1", True), ("False", False), ("no", False)])
def test_booleans_written_as_values(text, value):
    assert str2bool(text) is value


def test_every_documented_flag_is_in_help():
    text = build_parser().format_help()
    for flag in DOCUMENTED:
        assert flag in text, flag


def test_flags_land_in_their_components(tiny_qwen):
    config = parse_config(
        [
            "--vla_path",
            tiny_qwen,
            "--process_reward_model",
            "False",
            "--prm_reward_weight",
            "0.3",
            "--prm_reward_mode",
            "potential",
            "--save_video",
            "True",
            "--task_ids",
            "reach",
            "push",
            "--num_envs",
            "4",
            "--learning_rate",
            "1e-4",
            "--resume",
            "false",
            "--use_wandb",
            "False",
        ]
    )
    assert config.prm.process_reward_model is False and config.prm.prm_reward_weight == 0.3
    assert config.prm.prm_reward_mode == "potential" and config.run.save_video is True
    assert config.env.tasks == ["reach", "push"] and config.ppo.learning_rate == 1e-4
    assert config.run.resume is False
    assert parse_config(["--vla_path", tiny_qwen]).env.tasks == TASK_SUITES["default"]


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--prm_reward_weight", "-1"], "prm_reward_weight"),
        (["--prm_reward_mode", "linear"], "prm_reward_mode"),
        (["--process_reward_model", "maybe"], "process_reward_model"),
        (["--task_ids", "fly"], "--task_ids"),
        (["--num_steps", "0"], "--num_steps"),
        (["--temperature", "0"], "--temperature"),
        (["--vla_path", "/nonexistent/vla"], "--vla_path"),
        (["--prm_model_name_or_path", "/nonexistent/prm"], "--prm_model_name_or_path"),
        (["--local_rollout_forward_batch_size", "0"], "--local_rollout_forward_batch_size"),
        (["--prm_image_size", "8"], "--prm_image_size"),
        (["--prm_threshold", "1"], "--prm_threshold"),
        (["--prm_score_window", "-1"], "--prm_score_window"),
        (["--advantage_estimator", "ppo"], "--advantage_estimator"),
        (["--advantage_estimator", "grpo", "--group_size", "1"], "--group_size"),
        (["--loss_aggregation", "episode"], "--loss_aggregation must be sample, or episode with"),
        (["--advantage_estimator", "grpo", "--loss_aggregation", "token"], "--loss_aggregation"),
        (["--group_credit", "to_go"], "to_go needs --advantage_estimator grpo|rloo"),
        (["--advantage_estimator", "rloo", "--group_credit", "step"], "--group_credit must be one of episode, to_go"),
        (["--advantage_estimator", "grpo", "--num_envs", "6"], "--num_envs (6) must be a multiple of --group_size"),
        (["--advantage_estimator", "rloo", "--num_envs", "4"], "one group per task at least (2 tasks)"),
        (["--handover_probability", "1.5"], "--handover_probability"),
        (["--handover_probability", "nan"], "--handover_probability"),
        (["--handover_max_steps", "0"], "--handover_max_steps"),
        (["--handover_anneal", "-0.1"], "--handover_anneal"),
        (["--handover_action_noise", "-1"], "--handover_action_noise"),
        (["--handover_tasks", "stack"], "--handover_tasks ['stack'] are not among the run's tasks"),
        (["--handover_probability", "0.5", "--advantage_estimator", "grpo"], "needs --advantage_estimator gae"),
    ],
)
def test_bad_values_name_the_flag(argv, flag, tiny_qwen, capsys):
    base = [] if "--vla_path" in argv else ["--vla_path", tiny_qwen]
    with pytest.raises(SystemExit) as exit_info:
        parse_config(base + argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_bad_value_fails_fast_from_the_command_line(tiny_qwen):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vla_rl.train", "--vla_path", tiny_qwen, "--prm_reward_weight", "nan"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--prm_reward_weight" in result.stderr or "prm_reward_weight" in result.stderr
    assert time.perf_counter() - start < 20  # interpreter start + imports; no model is loaded


def test_handover_schedule_falls_linearly_to_zero(tiny_qwen):
    config = parse_config(
        [
            "--vla_path",
            tiny_qwen,
            "--handover_probability",
            "0.8",
            "--handover_anneal",
            "0.5",
            "--handover_tasks",
            "push",
        ]
    )
    assert config.env.handover() == {"tasks": ["push"], "max_steps": 30, "action_noise": 0.0}
    at = [config.env.handover_probability_at(n, 400) for n in (0, 100, 200, 300)]
    assert at == pytest.approx([0.8, 0.4, 0.0, 0.0])
    constant = parse_config(["--vla_path", tiny_qwen, "--handover_probability", "0.3", "--handover_anneal", "0"])
    assert constant.env.handover()["tasks"] == TASK_SUITES["default"]  # every task of the run
    assert constant.env.handover_probability_at(399, 400) == 0.3
    assert parse_config(["--vla_path", tiny_qwen]).env.handover() is None  # off by default


def test_annealed_learning_rate_falls_linearly_to_zero_at_the_episode_budget(tiny_qwen):
    flags = ["--vla_path", tiny_qwen, "--learning_rate", "1e-4", "--total_episodes", "400"]
    annealed = parse_config([*flags, "--anneal_lr", "True"]).ppo
    assert [annealed.learning_rate_at(n) for n in (0, 100, 300, 400, 480)] == pytest.approx(
        [1e-4, 7.5e-5, 2.5e-5, 0.0, 0.0]
    )
    assert parse_config(flags).ppo.learning_rate_at(399) == 1e-4  # constant by default


@pytest.mark.parametrize("estimator", ["gae", "grpo", "rloo"])
def test_potential_shaping_telescopes_under_the_returns_discount(estimator, tiny_qwen):
    """The potential terms of an episode sum, under the estimator's discount, to the last frame's
    potential minus the first's: GAE discounts by --gamma, GRPO/RLOO sum returns undiscounted."""
    import numpy as np

    from reward.shaping import Shaping
    from vla_rl.distributed.runtime import shaping_options

    config = parse_config(
        ["--vla_path", tiny_qwen, "--prm_reward_mode", "potential", "--advantage_estimator", estimator]
    )
    options = shaping_options(config)
    shaping = Shaping(options["weight"], options["mode"], options["threshold"], options["gamma"])
    scores = np.array([0.1, 0.6, 0.9, 0.8, 0.95])  # the reset frame, then four steps; truncated at the end
    terms = [shaping.term(scores[t + 1], scores[t], False) for t in range(len(scores) - 1)]
    discount = config.ppo.gamma if estimator == "gae" else 1.0
    discounted = sum(discount**t * term for t, term in enumerate(terms))
    assert discounted == pytest.approx(discount ** len(terms) * scores[-1] - scores[0])
    if estimator != "gae":  # the undiscounted sum is exactly the rise of the score, no time penalty
        assert sum(terms) == pytest.approx(scores[-1] - scores[0])


def test_the_prms_frames_are_those_it_was_trained_on(tiny_qwen, tmp_path):
    import json
    import shutil

    prm = tmp_path / "prm"
    shutil.copytree(tiny_qwen, prm)
    (prm / "prm_config.json").write_text(json.dumps({"image_size": 28, "camera": "wrist"}))
    on = parse_config(["--vla_path", tiny_qwen, "--prm_model_name_or_path", str(prm)])
    assert (on.prm.frame_size(), on.prm.frame_camera()) == (28, "wrist")
    off = parse_config(
        ["--vla_path", tiny_qwen, "--prm_model_name_or_path", str(prm), "--process_reward_model", "False"]
    )
    assert (off.prm.frame_size(), off.prm.frame_camera()) == (None, None)
    (prm / "prm_config.json").write_text(json.dumps({"image_size": 28}))  # trained before cameras were recorded
    assert (on.prm.frame_size(), on.prm.frame_camera()) == (28, "front")  # they were all front frames
    (prm / "prm_config.json").write_text(json.dumps({}))  # a PRM trained elsewhere: the policy's frames
    assert (on.prm.frame_size(), on.prm.frame_camera()) == (None, None)


def test_the_prms_score_window_reaches_the_reward_wrapper(tiny_qwen, tmp_path):
    import json
    import shutil

    from vla_rl.distributed.runtime import shaping_options

    prm = tmp_path / "prm"
    shutil.copytree(tiny_qwen, prm)
    (prm / "prm_config.json").write_text(json.dumps({"score_window": 3, "decision_threshold": 0.7}))
    flags = ["--vla_path", tiny_qwen, "--prm_model_name_or_path", str(prm)]
    assert shaping_options(parse_config(flags))["window"] == 3  # the PRM's own
    assert shaping_options(parse_config([*flags, "--prm_score_window", "1"]))["window"] == 1  # the flag wins
    (prm / "prm_config.json").write_text(json.dumps({}))  # a PRM trained before windows were recorded
    assert shaping_options(parse_config(flags))["window"] == 1
