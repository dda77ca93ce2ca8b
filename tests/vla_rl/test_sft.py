"""Behaviour cloning end to end on the tiny checkpoint, policy checkpoints, the position frame."""

import json
import os

import numpy as np
import pytest
import torch

from envs.demos import record
from vla_rl.demonstrations import Demonstrations
from vla_rl.policy.checkpoint import load_policy, save_policy
from vla_rl.qwen.processor import QwenImageProcessor, position_image
from vla_rl.sft import SFTConfig, soft_targets, train_sft

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demos") / "reach")
    record(["reach"], episodes=3, out=out, image_size=56, action_noise=0.2, progress_bar=False)
    return out


def test_soft_targets_are_normalised_gaussians_around_the_bin():
    targets = soft_targets(torch.tensor([[0, 100, 255]]), sigma=2.0)
    assert targets.shape == (1, 3, 256)
    torch.testing.assert_close(targets.sum(-1), torch.ones(1, 3))
    assert int(targets[0, 1].argmax()) == 100 and targets[0, 1, 99] == targets[0, 1, 101]
    assert torch.equal(
        soft_targets(torch.tensor([7]), sigma=0.0)[0], torch.nn.functional.one_hot(torch.tensor(7), 256).float()
    )


def test_clean_expert_labels_are_recorded_beside_noisy_actions(demos):
    from envs.demos import iter_episodes

    _, episode = next(iter_episodes(demos))
    assert episode.expert_actions.shape == episode.actions.shape
    assert not np.allclose(episode.expert_actions, episode.actions)  # noise was executed, not labelled
    assert np.abs(episode.expert_actions).max() <= 1.0


def test_demos_record_the_named_block_and_every_colour_object(demos):
    from envs.demos import iter_episodes
    from envs.scene import COLOUR_NAMES

    record_, episode = next(iter_episodes(demos))
    assert episode.named_positions.shape == (len(episode.images), 2, 3)
    # Reach names one block (twice); the expert ends with the fingertips on it, so the last
    # TCP position is within the success tolerance of the block's top.
    np.testing.assert_array_equal(episode.named_positions[:, 0], episode.named_positions[:, 1])
    top = episode.named_positions[-1, 0] + np.array([0, 0, 0.03])
    assert record_["success"] and np.linalg.norm(episode.states[-1, :3] - top) < 0.03
    # The grounding answers: the named colour's object is the named block; three blocks, three colours.
    colour = COLOUR_NAMES.index(episode.instruction.split()[2])
    np.testing.assert_array_equal(episode.colour_positions[:, colour], episode.named_positions[:, 0])
    shown = ~np.isnan(episode.colour_positions[0, :, 0])
    assert episode.colour_positions.shape == (len(episode.images), len(COLOUR_NAMES), 3) and shown.sum() == 3


def test_sft_writes_a_loadable_policy_that_reads_state_and_evaluates(demos, tiny_qwen, tmp_path):
    out = str(tmp_path / "policy")
    summary = train_sft(
        SFTConfig(
            data=[demos],
            vla_path=tiny_qwen,
            out=out,
            steps=6,
            batch_size=8,
            warmup_steps=2,
            eval_episodes=2,
            grounding_weight=1.0,
            relation_weight=1.0,
            localisation_weight=1.0,
            localisation_episodes=1,
            dagger_rounds=1,
            dagger_episodes=2,
            dagger_steps=2,
            dagger_max_steps=3,
        ),
        progress=False,
    )
    assert summary["samples"] > 0 and np.isfinite(summary["final_loss"])
    assert summary["eval"]["tasks"]["reach"]["episodes"] == 2
    policy = load_policy(out)
    assert policy.state_stats is not None and policy.action_tokenizer.stats is not None
    assert policy.image_size == 56
    with open(os.path.join(out, "vla_policy.json")) as f:
        assert json.load(f)["tasks"] == ["VLARL/Reach-v0"]
    history = json.load(open(os.path.join(out, "sft_summary.json")))["history"]
    assert history[0]["step"] == 0  # the demos record colour positions, so both auxiliary losses ran
    assert np.isfinite(history[0]["grounding_loss"]) and history[0]["relation_loss"] > 0
    # The tower kept vision pretraining's objective, and its held-out figures are reported.
    assert history[0]["localisation_loss"] > 0
    assert 0 <= summary["localisation_heldout"]["cell_f1"] <= 1
    assert summary["localisation_heldout"]["gripper_xy_error_cm"] > 0
    # One DAgger round: 2 policy episodes cut at 3 steps (reach takes longer) add 6 labelled states.
    dagger = json.load(open(os.path.join(out, "sft_summary.json")))["dagger"]
    recorded = len(Demonstrations.load([demos]).actions)
    assert len(dagger) == 1 and dagger[0]["samples"] == summary["samples"] == recorded + 6
    frames = np.zeros((2, 56, 56, 3), np.uint8)
    with pytest.raises(ValueError, match="proprioceptive state"):
        policy.act(frames, ["touch the red block"] * 2)
    states = np.zeros((2, 8), np.float32)
    states[1, :3] = 0.3  # a different state gives a different prompt
    out_a = policy.act(frames, ["touch the red block"] * 2, states, greedy=True)
    assert out_a["actions"].shape == (2, 7)
    # Round trip: saving and loading gives the same greedy actions and values.
    again = str(tmp_path / "again")
    os.makedirs(again)
    save_policy(policy, again)
    reloaded = load_policy(again)
    out_b = reloaded.act(frames, ["touch the red block"] * 2, states, greedy=True)
    assert torch.equal(out_a["token_ids"], out_b["token_ids"])
    torch.testing.assert_close(out_a["values"], out_b["values"])


def test_a_policy_cloned_on_the_front_and_wrist_view_sees_it_everywhere(demos, tiny_qwen, tmp_path):
    """Demonstrations recorded from ``front+wrist`` clone a policy that records that view; its
    DAgger rounds, localisation retention and evaluation run in envs that render it, and the
    loaded policy carries it (frames twice as wide). Demonstrations of two views do not mix."""
    from vla_rl import keys

    both = str(tmp_path / "both")
    meta = record(["reach"], episodes=2, out=both, image_size=56, camera=keys.FRONT_WRIST, progress_bar=False)
    assert meta["camera"] == keys.FRONT_WRIST
    loaded = Demonstrations.load([both])
    assert loaded.camera == keys.FRONT_WRIST and loaded.images.shape[1:] == (56, 112, 3)
    assert Demonstrations.load([demos]).camera == keys.FRONT_CAMERA
    with pytest.raises(ValueError, match="different cameras"):
        Demonstrations.load([demos, both])
    out = str(tmp_path / "policy")
    summary = train_sft(
        SFTConfig(
            data=[both],
            vla_path=tiny_qwen,
            out=out,
            steps=2,
            batch_size=4,
            warmup_steps=1,
            eval_episodes=1,
            localisation_weight=1.0,
            localisation_episodes=1,
            dagger_rounds=1,
            dagger_episodes=1,
            dagger_steps=1,
            dagger_max_steps=2,
        ),
        progress=False,
    )
    assert summary["samples"] == len(loaded.actions) + 2  # one DAgger episode cut at 2 steps
    assert summary["eval"]["tasks"]["reach"]["episodes"] == 1
    policy = load_policy(out)
    assert policy.camera == keys.FRONT_WRIST
    frames = np.zeros((1, 56, 112, 3), np.uint8)
    assert policy.act(frames, ["touch the red block"], np.zeros((1, 8), np.float32))["actions"].shape == (1, 7)
    legacy = json.load(open(os.path.join(out, "vla_policy.json")))
    del legacy["camera"]  # a policy saved before views were recorded saw the front camera
    json.dump(legacy, open(os.path.join(out, "vla_policy.json"), "w"))
    assert load_policy(out).camera == keys.FRONT_CAMERA


def test_sft_rejects_bad_input_before_loading(demos, tiny_qwen, tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        train_sft(SFTConfig(data=[str(tmp_path)], vla_path=tiny_qwen, out=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="--dagger_tasks push: not among the demonstrations' tasks"):
        train_sft(SFTConfig(data=[demos], vla_path=tiny_qwen, out=str(tmp_path / "o"), dagger_tasks=["push"]))
    with pytest.raises(ValueError, match="--localisation_weight .* --vision_lr_scale"):
        train_sft(
            SFTConfig(
                data=[demos], vla_path=tiny_qwen, out=str(tmp_path / "o"), localisation_weight=1, vision_lr_scale=0
            )
        )
    assert not os.path.exists(tmp_path / "o")


def test_position_frame_carries_patch_coordinates():
    base = {"patch_size": 7, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 196, "max_pixels": 224 * 224}
    plain = QwenImageProcessor(base)
    with_position = QwenImageProcessor({**base, "vla_rl_position_frame": True})
    frames = np.random.default_rng(0).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    a, grid_a = plain(frames)
    b, grid_b = with_position(frames)
    assert torch.equal(grid_a, grid_b) and a.shape == b.shape == (2 * 64, 3 * 2 * 49)
    patches_a = a.reshape(-1, 3, 2, 49)
    patches_b = b.reshape(-1, 3, 2, 49)
    torch.testing.assert_close(patches_a[:, :, 0], patches_b[:, :, 0])  # the frame itself is unchanged
    torch.testing.assert_close(patches_a[:, :, 1], patches_a[:, :, 0])  # plain: a copy of the frame
    # With the position frame the second slot is the same for both frames and differs per patch.
    torch.testing.assert_close(patches_b[:64, :, 1], patches_b[64:, :, 1])
    assert len({round(float(p[0].mean()), 4) for p in patches_b[:64, :, 1]}) > 4
    assert position_image(56, 56).shape == (1, 3, 56, 56)
    with pytest.raises(ValueError, match="multiples of 14"):
        with_position(np.zeros((1, 50, 50, 3), np.uint8))


def test_relabelled_samples_pair_each_frame_with_every_block_instruction(tmp_path):
    from envs.demos import iter_episodes

    out = str(tmp_path / "demos")
    record(["reach"], episodes=2, out=out, image_size=56, action_noise=0.1, progress_bar=False)
    plain, relabelled = Demonstrations.load([out]), Demonstrations.load([out], relabel=True)
    assert len(relabelled.actions) == 3 * len(plain.actions)  # three blocks: two counterfactual copies
    _, episode = next(iter_episodes(out))
    steps = len(episode.actions)
    for k, text in enumerate(episode.alternative_instructions):
        rows = slice((k + 1) * steps, (k + 2) * steps)
        np.testing.assert_array_equal(relabelled.images[rows], episode.images[:steps])
        np.testing.assert_array_equal(relabelled.actions[rows], episode.alternative_actions[:, k])
        assert set(relabelled.instructions[rows]) == {str(text)} != {episode.instruction}
        np.testing.assert_array_equal(relabelled.colour_positions[rows], episode.colour_positions[:steps])


def test_relabelling_skips_the_labels_the_expert_left_out(tmp_path):
    from envs.demos import iter_episodes

    out = str(tmp_path / "demos")
    record(["push"], episodes=1, out=out, image_size=56, action_noise=0.1, progress_bar=False)
    _, episode = next(iter_episodes(out))
    labelled = ~np.isnan(episode.alternative_actions).any(axis=2)  # (T, 8)
    assert 0 < labelled.sum() < labelled.size  # the push expert leaves its back-off labels out
    plain, relabelled = Demonstrations.load([out]), Demonstrations.load([out], relabel=True)
    assert len(relabelled.actions) == len(plain.actions) + labelled.sum() == len(relabelled.instructions)
    assert len(relabelled.images) == len(relabelled.states) == len(relabelled.colour_positions)
    assert len(relabelled.images) == len(relabelled.actions)
    assert not np.isnan(relabelled.actions).any()
    steps = len(episode.actions)
    first = slice(steps, steps + int(labelled[:, 0].sum()))
    np.testing.assert_array_equal(relabelled.actions[first], episode.alternative_actions[labelled[:, 0], 0])
    np.testing.assert_array_equal(relabelled.images[first], episode.images[:steps][labelled[:, 0]])
