"""ProcessRewardTrainer end to end on a tiny Qwen2-VL checkpoint and a simulator-labelled dataset."""

import json
import os

import numpy as np
import pytest

from reward.data import DataConfig, generate
from reward.dataset import episode_key, load_image, load_rows, read_meta
from reward.prm_metrics import best_f1_threshold, best_window_threshold
from reward.qwen_prm import QwenProcessRM
from reward.train_prm import PRMTrainConfig, main, train_prm


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("prm") / "data")
    generate(DataConfig(out=out, tasks=["reach", "push"], num_samples=8, image_size=56, seed=5), progress_bar=False)
    return out


def _config(dataset, model, out, **kwargs) -> PRMTrainConfig:
    values = dict(batch_size=16, learning_rate=3e-3, eval_steps=30, save_steps=30, logging_steps=10, max_steps=60)
    values.update(kwargs)
    return PRMTrainConfig(data=dataset, model_name_or_path=model, out=str(out), **values)


def _probe_scores(summary, dataset, prm):
    rows = {r["image"]: r for r in load_rows(dataset, "validation")}
    chosen = [rows[name] for name in summary["probe"]["rows"]]
    frames = np.stack([load_image(r["image_path"]) for r in chosen])
    return prm.score(frames, [r["instruction"] for r in chosen])


def test_full_finetune_lowers_validation_loss_and_reloads(dataset, tiny_qwen, tmp_path):
    summary = train_prm(_config(dataset, tiny_qwen, tmp_path / "run"))
    assert summary["mode"] == "full" and summary["steps"] == 60
    assert summary["final"]["eval_loss"] < summary["initial"]["initial_loss"] - 0.02
    assert sorted(n for n in os.listdir(tmp_path / "run") if n.startswith("checkpoint-")) == [
        "checkpoint-30",
        "checkpoint-60",
    ]
    final = summary["final_checkpoint"]
    with open(os.path.join(final, "prm_config.json")) as f:
        recorded = json.load(f)
    assert recorded["answer_tokens"] == ["Yes", "No"]
    prm = QwenProcessRM(final)
    reloaded = _probe_scores(summary, dataset, prm)
    np.testing.assert_allclose(reloaded, summary["probe"]["scores"], atol=1e-5)
    # the decision threshold and score window are the best-F1 ones on the validation episodes, and the
    # reloaded PRM knows them
    rows = load_rows(dataset, "validation")
    scores = prm.score(np.stack([load_image(r["image_path"]) for r in rows]), [r["instruction"] for r in rows])
    labels = [r["completion"] for r in rows]
    window, threshold, f1 = best_window_threshold(
        scores, labels, [episode_key(r) for r in rows], [r["frame"] for r in rows], (1, 2, 3, 4)
    )
    assert (recorded["score_window"], prm.score_window, summary["score_window"]) == (window, window, window)
    assert recorded["decision_threshold"] == pytest.approx(threshold) == prm.threshold
    assert recorded["decision_threshold_validation_f1"] == pytest.approx(f1, abs=1e-6)
    assert summary["decision_threshold"] == recorded["decision_threshold"]
    assert f1 >= best_f1_threshold(scores, labels)[1] - 1e-9  # window 1 is among those tried


def test_lora_adapter_save_load_gives_the_same_scores(dataset, tiny_qwen, tmp_path):
    summary = train_prm(_config(dataset, tiny_qwen, tmp_path / "lora", finetune="lora", max_steps=20))
    assert summary["mode"] == "lora" and summary["trainable_parameters"] < summary["total_parameters"] / 4
    final = summary["final_checkpoint"]
    assert os.path.isfile(os.path.join(final, "adapter_model.safetensors"))
    for merge in (True, False):
        prm = QwenProcessRM(tiny_qwen, adapter_path=final, merge_adapter=merge)
        np.testing.assert_allclose(_probe_scores(summary, dataset, prm), summary["probe"]["scores"], atol=1e-5)
    # the PPO trainer's own loader takes the adapter from the documented flags, without conversion
    from vla_rl.config import parse_config
    from vla_rl.distributed.runtime import build_prm

    ppo_config = parse_config(
        [
            "--vla_path",
            tiny_qwen,
            "--process_reward_model",
            "True",
            "--prm_model_name_or_path",
            tiny_qwen,
            "--prm_checkpoint_path",
            final,
            "--run_root_dir",
            str(tmp_path / "runs"),
        ]
    )
    from_trainer = _probe_scores(summary, dataset, build_prm(ppo_config))
    np.testing.assert_allclose(from_trainer, summary["probe"]["scores"], atol=1e-5)
    base = _probe_scores(summary, dataset, QwenProcessRM(tiny_qwen))
    assert np.abs(base - np.asarray(summary["probe"]["scores"])).max() > 1e-3  # the adapter changed the PRM


def test_resume_continues_from_the_last_checkpoint(dataset, tiny_qwen, tmp_path):
    out = tmp_path / "resume"
    first = train_prm(_config(dataset, tiny_qwen, out, max_steps=30))
    assert first["steps"] == 30
    second = train_prm(_config(dataset, tiny_qwen, out, max_steps=60, resume=True))
    assert second["resumed_from"].endswith("checkpoint-30") and second["steps"] == 60


def test_auxiliary_losses_train_heads_that_checkpoint_and_resume(dataset, tiny_qwen, tmp_path):
    import torch
    from safetensors.torch import load_file

    from reward.prm_trainer import GROUNDING_HEAD_FILE, RELATION_HEAD_FILE

    out = tmp_path / "grounded"
    flags = dict(grounding_weight=1.0, relation_weight=1.0, freeze_vision=True)
    train_prm(_config(dataset, tiny_qwen, out, max_steps=30, **flags))
    state = json.load(open(out / "checkpoint-30" / "trainer_state.json"))
    for name in ("grounding_loss", "relation_loss"):
        logged = [e[name] for e in state["log_history"] if name in e]
        assert len(logged) == 3 and all(np.isfinite(logged)) and logged[0] > 0
    before, after = (
        load_file(os.path.join(tiny_qwen, "model.safetensors")),
        load_file(str(out / "checkpoint-30" / "model.safetensors")),
    )
    visual = [k for k in before if ".visual." in k or k.startswith("visual.")]
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)  # --freeze_vision True
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in visual)
    for filename in (GROUNDING_HEAD_FILE, RELATION_HEAD_FILE):
        assert not (out / "final_checkpoint" / filename).exists()  # training-only heads
        # resuming restores each head from checkpoint-30: mark it, and the resumed run must start from the mark
        path = out / "checkpoint-30" / filename
        torch.save({k: torch.full_like(v, 5.0) for k, v in torch.load(path, weights_only=True).items()}, path)
    train_prm(_config(dataset, tiny_qwen, out, max_steps=60, resume=True, **flags))
    for filename in (GROUNDING_HEAD_FILE, RELATION_HEAD_FILE):
        head = torch.load(out / "checkpoint-60" / filename, weights_only=True)
        drift = max(float((head[k] - 5.0).abs().max()) for k in head)
        assert 0 < drift < 0.2  # 30 Adam steps at lr 3e-3 from the mark; a fresh head would sit near 0


def test_evaluating_more_often_leaves_the_trained_weights_unchanged(dataset, tiny_qwen, tmp_path):
    # the build evaluates its long rounds at their start and end only, on this guarantee
    import torch
    from safetensors.torch import load_file

    flags = dict(grounding_weight=1.0, relation_weight=1.0, colour_permutation=0.5, freeze_vision=True, max_steps=20)
    weights = []
    for eval_steps in (5, 20):
        out = tmp_path / f"eval{eval_steps}"
        summary = train_prm(_config(dataset, tiny_qwen, out, eval_steps=eval_steps, save_steps=20, **flags))
        evaluations = json.load(open(out / "checkpoint-20" / "trainer_state.json"))["log_history"]
        assert sum("eval_loss" in e for e in evaluations) == 20 // eval_steps
        weights.append(load_file(os.path.join(summary["final_checkpoint"], "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_grounding_needs_a_dataset_with_colour_positions(dataset, tiny_qwen, tmp_path, capsys):
    import shutil

    copy = tmp_path / "plain"
    shutil.copytree(dataset, copy)
    path = copy / "train.jsonl"
    rows = [json.loads(line) for line in open(path)]
    for row in rows:
        del row["colour_positions"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--data", str(copy), "--model_name_or_path", tiny_qwen, "--out", str(tmp_path / "o")]
    assert main(argv + ["--grounding_weight", "1"]) == 2
    assert "record colour_positions" in capsys.readouterr().err
    assert main(argv + ["--relation_weight", "1"]) == 2
    assert "--relation_weight needs datasets whose rows record colour_positions" in capsys.readouterr().err
    assert main(argv + ["--grounding_weight", "-1"]) == 2
    assert "--grounding_weight must be >= 0" in capsys.readouterr().err
    assert main(argv + ["--relation_weight", "-0.5"]) == 2
    assert "--relation_weight must be >= 0" in capsys.readouterr().err


def test_several_datasets_train_together_and_their_seeds_are_recorded(dataset, tiny_qwen, tmp_path, capsys):
    second = str(tmp_path / "second")
    generate(DataConfig(out=second, tasks=["reach"], num_samples=2, image_size=56, seed=40), progress_bar=False)
    summary = train_prm(
        _config([dataset, second], tiny_qwen, tmp_path / "mix", max_steps=4, eval_steps=4, save_steps=4)
    )
    for split, key in (("train", "train_frames"), ("validation", "validation_frames")):
        assert summary[key] == len(load_rows(dataset, split)) + len(load_rows(second, split))
    with open(os.path.join(summary["final_checkpoint"], "prm_config.json")) as f:
        recorded = json.load(f)
    assert recorded["dataset"] == [dataset, second]
    metas = [read_meta(d)["seeds"]["train"] for d in (dataset, second)]
    for task, seeds in recorded["dataset_seeds"]["train"].items():
        assert seeds == sorted(set(metas[0].get(task, [])) | set(metas[1].get(task, [])))
    # datasets rendered at different image sizes are refused before the model loads
    meta_path = tmp_path / "second" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "image_size": 64}))
    argv = ["--data", dataset, second, "--model_name_or_path", tiny_qwen, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "different image sizes" in capsys.readouterr().err
    # and so are datasets of different cameras
    meta_path.write_text(json.dumps({**meta, "camera": "wrist"}))
    assert main(argv) == 2
    assert "different cameras" in capsys.readouterr().err
    assert recorded["camera"] == "front"  # what the trained PRM scores, for the trainer's envs


def test_bad_input_is_reported_before_loading(dataset, tiny_qwen, tmp_path, capsys):
    assert (
        main(["--data", str(tmp_path / "none"), "--model_name_or_path", tiny_qwen, "--out", str(tmp_path / "o")]) == 2
    )
    assert "is not a PRM dataset" in capsys.readouterr().err
    assert main(["--data", dataset, "--model_name_or_path", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--model_name_or_path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", dataset, "--model_name_or_path", tiny_qwen, "--out", "o", "--target", "bogus"])
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "file").write_text("x")
    assert main(["--data", dataset, "--model_name_or_path", tiny_qwen, "--out", str(existing)]) == 2
    assert "--resume True" in capsys.readouterr().err
