"""QwenProcessRM on a locally built tiny Qwen2-VL checkpoint (the real loading and scoring path)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from reward.qwen_prm import QwenProcessRM
from vla_rl.qwen.processor import QwenImageProcessor

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
TEXTS = ["touch the red block", "stack the blue block on the green block", "push the cyan block", "touch the red block"]


@pytest.fixture(scope="module")
def prm(tiny_qwen):
    return QwenProcessRM(tiny_qwen, batch_size=8)


def test_scores_are_probabilities_that_change_with_the_image(prm):
    scores = prm.score(FRAMES, TEXTS)
    assert scores.dtype == np.float32 and scores.shape == (4,)
    assert np.all((scores > 0) & (scores < 1))
    changed = prm.score(255 - FRAMES[:1], TEXTS[:1])
    assert abs(float(changed[0]) - float(scores[0])) > 1e-4


def test_score_is_the_softmax_of_the_two_answer_logits(prm):
    logits = prm.answer_logits(FRAMES[:2], TEXTS[:2])
    expected = torch.softmax(logits, dim=-1)[:, 0].numpy()
    np.testing.assert_allclose(prm.score(FRAMES[:2], TEXTS[:2]), expected, rtol=1e-6)


def test_left_padded_batches_match_single_frames(prm):
    batch = prm.score(FRAMES, TEXTS)  # prompts of different lengths share one padded batch
    singles = np.array([prm.score(FRAMES[i : i + 1], TEXTS[i : i + 1])[0] for i in range(4)])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_batch_size_splits_do_not_change_scores(tiny_qwen, prm):
    small = QwenProcessRM(tiny_qwen, batch_size=1)
    np.testing.assert_allclose(small.score(FRAMES, TEXTS), prm.score(FRAMES, TEXTS), atol=1e-5)


@pytest.mark.parametrize("size", [56, 112, 224])
def test_fast_preprocessing_matches_the_reference_processor(tiny_qwen, size):
    processor = QwenImageProcessor.from_pretrained(tiny_qwen)
    frames = RNG.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    assert processor.target_size(size, size) == (size, size)
    fast, grid = processor.fast(frames)
    reference = processor.reference(list(frames), return_tensors="pt")
    assert fast.shape == reference["pixel_values"].shape
    assert torch.max(torch.abs(fast - reference["pixel_values"])) <= 1e-5
    assert torch.equal(grid, reference["image_grid_thw"])


def test_frames_not_at_target_size_use_the_reference_path(prm):
    frames = RNG.integers(0, 256, (2, 100, 100, 3), dtype=np.uint8)  # not a multiple of 28
    scores = prm.score(frames, TEXTS[:2])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))


@pytest.mark.parametrize("answers", [("1", "0"), ("+", "-"), "plus_minus"])
def test_configurable_answer_tokens_and_prompt(tiny_qwen, answers):
    prm = QwenProcessRM(tiny_qwen, answer_tokens=answers, prompt_template="Is '{instruction}' done?")
    scores = prm.score(FRAMES[:2], TEXTS[:2])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))


def test_public_layout_with_only_chat_template_json(tiny_qwen, tmp_path):
    """Like Qwen/Qwen2-VL-2B-Instruct: the template in chat_template.json, a Qwen2VLProcessor config."""
    copy = tmp_path / "public-layout"
    shutil.copytree(tiny_qwen, copy)
    os.remove(copy / "chat_template.jinja")
    with open(copy / "preprocessor_config.json") as f:
        assert json.load(f)["processor_class"] == "Qwen2VLProcessor"
    prm = QwenProcessRM(str(copy))
    assert prm.score(FRAMES[:1], TEXTS[:1]).shape == (1,)


def _save_random_lora(model, path, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(path)
    return peft_model


def test_lora_adapter_round_trip_changes_scores(tiny_qwen, tmp_path, prm):
    from vla_rl.qwen.loading import load_model

    adapter = str(tmp_path / "adapter")
    _save_random_lora(load_model(tiny_qwen, "test"), adapter)
    base = prm.score(FRAMES, TEXTS)
    merged = QwenProcessRM(tiny_qwen, adapter_path=adapter, merge_adapter=True).score(FRAMES, TEXTS)
    unmerged = QwenProcessRM(tiny_qwen, adapter_path=adapter, merge_adapter=False).score(FRAMES, TEXTS)
    assert np.max(np.abs(merged - base)) > 1e-4
    np.testing.assert_allclose(merged, unmerged, atol=1e-5)


def test_missing_and_wrong_directories_fail_early(tmp_path, tiny_qwen):
    with pytest.raises(FileNotFoundError, match="--prm_model_name_or_path"):
        QwenProcessRM(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no config.json"):
        QwenProcessRM(str(tmp_path))
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not a Qwen2-VL-family"):
        QwenProcessRM(str(other))
    with pytest.raises(FileNotFoundError, match="--prm_checkpoint_path"):
        QwenProcessRM(tiny_qwen, adapter_path=str(tmp_path / "no-adapter"))
    with pytest.raises(ValueError, match="not a peft adapter"):
        QwenProcessRM(tiny_qwen, adapter_path=str(tmp_path))


def test_a_trained_prm_knows_its_frame_size_and_refuses_others(tiny_qwen, tmp_path):
    trained = str(tmp_path / "trained")
    shutil.copytree(tiny_qwen, trained)
    with open(os.path.join(trained, "prm_config.json"), "w") as f:
        json.dump({"image_size": 56}, f)
    prm = QwenProcessRM(trained)
    assert prm.image_size == 56 and QwenProcessRM(tiny_qwen).image_size is None
    assert prm.score(FRAMES[:2, :56, :56], TEXTS[:2]).shape == (2,)
    with pytest.raises(ValueError, match=r"trained on 56-px frames .*\(--prm_image_size 56"):
        prm.score(FRAMES[:2], TEXTS[:2])
    # a PRM of a two-camera view takes its frames side by side, twice as wide
    two_views = str(tmp_path / "two_views")
    shutil.copytree(tiny_qwen, two_views)
    with open(os.path.join(two_views, "prm_config.json"), "w") as f:
        json.dump({"image_size": 28, "camera": "front+wrist"}, f)
    both = QwenProcessRM(two_views)
    assert both.score(FRAMES[:2, :28, :56], TEXTS[:2]).shape == (2,)
    with pytest.raises(ValueError, match="trained on 28-px frames and got 28x28"):
        both.score(FRAMES[:2, :28, :28], TEXTS[:2])
    # the PPO config reads the size from the PRM, and renders the PRM's frames at it
    from vla_rl.config import parse_config

    def frame_size(model, *extra):
        argv = ["--vla_path", tiny_qwen, "--prm_model_name_or_path", model, "--run_root_dir", str(tmp_path)]
        return parse_config([*argv, *extra]).prm.frame_size()

    assert frame_size(trained) == frame_size(trained, "--prm_image_size", "56") == 56
    assert frame_size(trained, "--process_reward_model", "False") is None
    assert frame_size(tiny_qwen) is None  # no recorded size: the policy's frames
    assert frame_size("oracle_progress", "--prm_image_size", "112") == 112


def test_adapter_for_another_base_is_rejected(tiny_qwen, tmp_path):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig.from_pretrained(tiny_qwen)
    config.text_config.hidden_size = 32
    config.text_config.intermediate_size = 64
    config.vision_config.hidden_size = 32
    adapter = str(tmp_path / "other-adapter")
    _save_random_lora(Qwen2VLForConditionalGeneration(config), adapter)
    with pytest.raises(ValueError, match="does not match the base model"):
        QwenProcessRM(tiny_qwen, adapter_path=adapter)


def test_bad_prompt_and_answer_tokens(tiny_qwen):
    with pytest.raises(ValueError, match="instruction"):
        QwenProcessRM(tiny_qwen, prompt_template="Is it done?")
    with pytest.raises(ValueError, match="exactly one"):
        QwenProcessRM(tiny_qwen, answer_tokens=("completely finished", "No"))
    with pytest.raises(ValueError, match="answer_tokens"):
        QwenProcessRM(tiny_qwen, answer_tokens="maybe")


def test_flat_v4_style_config_like_the_public_checkpoint(tiny_qwen, tmp_path, prm):
    """The public config.json is flat (text settings at the top, rope_scaling type mrope)."""
    from transformers import AutoTokenizer

    from vla_rl.qwen.build import build_config

    copy = tmp_path / "flat-config"
    shutil.copytree(tiny_qwen, copy)
    flat = build_config("tiny", AutoTokenizer.from_pretrained(tiny_qwen))
    assert "text_config" not in flat and flat["rope_scaling"]["type"] == "mrope"
    (copy / "config.json").write_text(json.dumps(flat))
    np.testing.assert_allclose(QwenProcessRM(str(copy)).score(FRAMES, TEXTS), prm.score(FRAMES, TEXTS), atol=1e-6)


def test_the_prms_recorded_decision_threshold_is_the_default(tiny_qwen, tmp_path):
    from vla_rl.config import parse_config

    trained = str(tmp_path / "trained")
    shutil.copytree(tiny_qwen, trained)
    with open(os.path.join(trained, "prm_config.json"), "w") as f:
        json.dump({"decision_threshold": 0.73}, f)
    assert QwenProcessRM(trained).threshold == 0.73 and QwenProcessRM(tiny_qwen).threshold == 0.5

    def threshold(model, *extra):
        argv = ["--vla_path", tiny_qwen, "--prm_model_name_or_path", model, "--run_root_dir", str(tmp_path)]
        return parse_config([*argv, *extra]).prm.decision_threshold()

    assert threshold(trained) == 0.73
    assert threshold(trained, "--prm_threshold", "0.6") == 0.6
    assert threshold(tiny_qwen) == threshold("oracle") == 0.5
    with pytest.raises(SystemExit):
        threshold(trained, "--prm_threshold", "1.5")
