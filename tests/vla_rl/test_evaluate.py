import json
import math
import os

import pytest

from vla_rl.evaluate import main as evaluate_main
from vla_rl.evaluate import success_interval

SHIPPED_VLA = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "models", "vla-small")


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson, 1927)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(118, 200), (58, 200), (1, 20), (7, 50)])
def test_success_interval_is_the_wilson_interval(k, n):
    assert success_interval(k, n) == pytest.approx(wilson(k, n), abs=1e-9)


def test_success_interval_at_the_edges_and_its_width_at_200_seeds():
    low, high = success_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17  # nothing seen in 20 seeds still allows ~16 %
    low, high = success_interval(50, 50)
    assert high == 1.0 and 0.92 < low < 0.94
    low, high = success_interval(60, 200)  # 30 % over 200 seeds: about +-6.5 points
    assert 0.06 < (high - low) / 2 < 0.07


def test_a_sampled_evaluation_repeats_with_its_sampling_seed(tmp_path, capsys):
    figures = []
    for seed in ("0", "0", "1"):
        out = tmp_path / f"eval-{len(figures)}.json"
        flags = ["--task_ids", "reach", "--episodes", "3", "--num_envs", "3", "--sample", "--temperature", "0.5"]
        assert evaluate_main(["--vla_path", SHIPPED_VLA, *flags, "--sampling_seed", seed, "--out", str(out)]) == 0
        summary = json.load(open(out))
        row = summary["tasks"]["reach"]
        figures.append((summary["sampling_seed"], row["mean_length"], row["mean_final_progress"]))
    assert figures[0] == figures[1]  # the same seed: the same actions, the same episodes
    assert figures[2][0] == 1 and figures[2][1:] != figures[0][1:]  # another seed samples other actions
    assert "over 3 seeds, 95 % CI" in capsys.readouterr().out


@pytest.mark.parametrize("inset", [False, True])
def test_videos_show_the_prms_frames_beside_the_view_when_they_come_from_another_camera(tmp_path, inset):
    import imageio.v2 as imageio
    import numpy as np

    from reward.base import DummyRM
    from reward.video import INSET, INSET_TOP, PANEL, VIEW
    from vla_rl.evaluate import write_videos

    length = 4
    record = {
        "frames": [np.zeros((56, 56, 3), np.uint8)] * length,
        "prm_frames": [np.full((56, 56, 3), (40, 60, 220), np.uint8)] * length,
        "infos": [{"success": False}] * length,
        "actions": [np.zeros(7)] * length,
        "instruction": "push the red block onto the blue target",
        "success": False,
    }
    (path,) = write_videos([record], "push", str(tmp_path), DummyRM(), inset=inset)
    reader = imageio.get_reader(path)
    first = reader.get_data(0).astype(int)
    reader.close()
    assert first.shape[1] == VIEW + PANEL + (INSET if inset else 0)
    view = first[10 : VIEW - 10, 10 : VIEW - 10].mean(axis=(0, 1))
    assert view.max() < 25, view  # the policy's (black) frame, whole
    if inset:  # the PRM's (blue) frame beside it, through the video codec
        shown = first[INSET_TOP + 10 : INSET_TOP + INSET - 10, VIEW + PANEL + 10 : -10].mean(axis=(0, 1))
        assert np.abs(shown - (40, 60, 220)).max() < 25, shown
