"""Vision pretraining: simulator labels of what is where, and a short run that learns them."""

import json
import os

import numpy as np
import pytest
import torch

from envs.scene import COLOUR_NAMES
from vla_rl.qwen.build import build_checkpoint
from vla_rl.vision_pretrain import (
    OBJECTS,
    POSITION_SCALE,
    VisionPretrainConfig,
    cell_labels,
    pretrain_vision,
    pretrained_view,
    record,
)

pytestmark = pytest.mark.timeout(600)


def test_cell_labels_mark_the_cells_an_objects_pixels_fall_in():
    segmentation = np.full((8, 8), -1, np.int32)
    segmentation[1, 1] = 5  # object 0, top-left cell
    segmentation[3, 4:6] = 7  # object 1, straddles nothing: top-right cell
    segmentation[6, 3:5] = 5  # object 0 again, across the two bottom cells
    labels = cell_labels(segmentation, [[5], [7, 9], []], cell=4)
    expected = np.array(
        [
            [True, False, False],
            [False, True, False],
            [True, False, False],
            [True, False, False],
        ]
    )
    np.testing.assert_array_equal(labels, expected)


def test_recorded_labels_agree_with_the_scene():
    data = record(["push"], episodes=1, image_size=56, cell=28, seed=3, action_noise=0.0, max_steps=4)
    frames = len(data["images"])
    assert data["images"].shape == (frames, 56, 56, 3) and frames == 4
    assert data["visible"].shape == (frames, 4, len(OBJECTS))
    assert data["positions"].shape == (frames, len(OBJECTS), 3)
    # Push shows three blocks and three pads, six distinct colours: exactly six palette objects
    # have a position, and each is visible in at least one cell of the first frame.
    present = np.abs(data["positions"][0, :-1]).sum(-1) > 0
    assert present.sum() == 6
    assert data["visible"][0, :, :-1].any(0)[present].all()
    assert not data["visible"][0, :, :-1].any(0)[~present].any()
    # The gripper is in view and its position is the TCP's: above the table.
    assert data["visible"][:, :, -1].any(1).all()
    assert (data["positions"][:, -1, 2] * POSITION_SCALE > 0.02).all()


def test_wrist_camera_labels_are_in_the_cameras_frame():
    """The eye-in-hand camera moves with the hand: positions are given in its own frame, where
    the gripper sits at a fixed place in front of the lens whatever the hand does."""
    data = record(["reach"], episodes=1, image_size=56, cell=28, seed=3, action_noise=0.0, max_steps=6, camera="wrist")
    front = record(["reach"], episodes=1, image_size=56, cell=28, seed=3, action_noise=0.0, max_steps=6)
    assert not np.array_equal(data["images"], front["images"])
    tcp = data["positions"][:, -1] * POSITION_SCALE
    np.testing.assert_allclose(tcp, np.broadcast_to(tcp[0], tcp.shape), atol=0.01)  # held by the fingers' weld
    assert tcp[0, 2] < -0.05  # in front of the lens (the camera looks along its -z)
    moving = front["positions"][:, -1] * POSITION_SCALE
    assert np.linalg.norm(moving[-1] - moving[0]) > 0.03  # while in the world the hand moved
    assert data["visible"][:, :, -1].any(1).all()  # and the fingers are in view


def test_front_and_wrist_view_labels_cover_both_halves_in_the_world_frame():
    """Side by side, the frames are twice as wide, with twice the cells; positions stay in the
    world frame (the front half shows them), as the front camera's alone."""
    options = {"episodes": 1, "image_size": 56, "cell": 28, "seed": 3, "action_noise": 0.0, "max_steps": 3}
    both, front = record(["push"], camera="front+wrist", **options), record(["push"], **options)
    assert both["images"].shape == (3, 56, 112, 3) and both["visible"].shape == (3, 8, len(OBJECTS))
    np.testing.assert_array_equal(both["images"][:, :, :56], front["images"])
    np.testing.assert_array_equal(both["visible"].reshape(3, 2, 4, -1)[:, :, :2], front["visible"].reshape(3, 2, 2, -1))
    np.testing.assert_allclose(both["positions"], front["positions"])


def test_pretraining_learns_where_things_are_and_writes_a_loadable_checkpoint(tmp_path):
    from vla_rl.qwen.loading import load_model

    init = build_checkpoint(str(tmp_path / "init"), preset="vla-small", seed=0, position_frame=True)
    config = VisionPretrainConfig(
        vla_path=init, out=str(tmp_path / "out"), tasks=("reach",), episodes=6, heldout_episodes=2,
        max_steps=20, steps=300, batch_size=32, learning_rate=3e-3,
    )  # fmt: skip
    summary = pretrain_vision(config, progress=False)
    before, after = summary["heldout_before"], summary["heldout_after"]
    assert after["cell_f1"] > before["cell_f1"] + 0.2
    assert after["gripper_xy_error_cm"] < before["gripper_xy_error_cm"]
    with open(os.path.join(config.out, "vision_pretrain.json")) as f:
        assert json.load(f)["heldout_after"] == after
    assert pretrained_view(config.out) == (56, "front") and pretrained_view(init) is None
    trained, untouched = load_model(config.out, "--vla_path"), load_model(init, "--vla_path")
    changed = {n for n, p in trained.named_parameters() if not torch.equal(p, dict(untouched.named_parameters())[n])}
    assert changed and all(".visual." in n for n in changed)  # the language model is left as it was
    assert os.path.isfile(os.path.join(config.out, "preprocessor_config.json"))


def test_bad_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--steps"):
        VisionPretrainConfig(vla_path="x", out=str(tmp_path / "o"), steps=0).validate()
    with pytest.raises(ValueError, match="--tasks: unknown task"):
        VisionPretrainConfig(vla_path="x", out=str(tmp_path / "o"), tasks=("fly",)).validate()
    with pytest.raises(ValueError, match="--camera must be one of front, wrist"):
        VisionPretrainConfig(vla_path="x", out=str(tmp_path / "o"), camera="top").validate()
    assert len(OBJECTS) == len(COLOUR_NAMES) + 1
