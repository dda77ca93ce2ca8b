"""The PRM evaluation CLI on a real simulator-labelled dataset: references and the seed check."""

import json

import numpy as np
import pytest

from reward.data import DataConfig, generate
from reward.evaluate_prm import main


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("prm") / "heldout")
    generate(DataConfig(out=out, tasks=["reach", "push"], num_samples=6, image_size=32, seed=9), progress_bar=False)
    return out


def test_oracle_is_perfect_and_random_is_not(heldout, tmp_path, capsys):
    assert (
        main(["--prm_model_name_or_path", "oracle", "--data", heldout, "--split", "all", "--out", str(tmp_path / "o")])
        == 0
    )
    report = json.loads((tmp_path / "o" / "prm_eval.json").read_text())
    assert report["frame"]["f1"] == 1.0 and report["frame"]["ece"] == 0.0
    assert report["episode"]["earliest_completion_error_frames"] == 0.0
    assert report["episode"]["flicker_rate"] == 0.0
    assert set(report["per_task"]) == {"VLARL/Reach-v0", "VLARL/Push-v0"}
    assert (tmp_path / "o" / "prm_curves.png").stat().st_size > 5000
    assert "evaluation seeds:" in capsys.readouterr().out
    assert (
        main(["--prm_model_name_or_path", "random", "--data", heldout, "--split", "all", "--out", str(tmp_path / "r")])
        == 0
    )
    random_report = json.loads((tmp_path / "r" / "prm_eval.json").read_text())
    assert random_report["frame"]["f1"] < 0.6
    progress = tmp_path / "p"
    assert (
        main(
            ["--prm_model_name_or_path", "oracle_progress", "--data", heldout, "--split", "all", "--out", str(progress)]
        )
        == 0
    )
    # privileged progress rises along successful episodes
    assert json.loads((progress / "prm_eval.json").read_text())["episode"]["value_order_correlation"] > 0.8


def test_a_score_window_averages_within_each_episode(heldout, tmp_path, capsys):
    out = tmp_path / "w"
    args = ["--prm_model_name_or_path", "oracle", "--data", heldout, "--split", "all", "--out", str(out)]
    assert main([*args, "--score_window", "3"]) == 0
    report = json.loads((out / "prm_eval.json").read_text())
    assert report["score_window"] == 3 and report["frame_unwindowed"]["f1"] == 1.0
    # the oracle's first completed frame of each successful episode averages to 1/3 (under the 0.5
    # threshold), its second to 2/3: one missed frame per episode, never a frame of another episode
    successful = report["episode"]["successful_episodes"]
    frame = report["frame"]
    assert frame["precision"] == 1.0 and frame["positives"] - frame["recall"] * frame["positives"] == pytest.approx(
        successful
    )
    assert "score window 3 frame(s) (unaveraged: F1 1.000)" in capsys.readouterr().out
    # the per-frame file holds every frame, its window-averaged score the mean over its episode's last three
    import csv

    with open(out / "prm_scores.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == frame["frames"] and sum(int(r["completion"]) for r in table) == frame["positives"]
    episode = sorted((r for r in table if r["episode"] == table[-1]["episode"]), key=lambda r: int(r["frame"]))
    raw = np.array([float(r["score"]) for r in episode])
    assert raw.tolist() == [float(r["completion"]) for r in episode]  # the oracle scores its labels
    expected = [raw[max(0, i - 2) : i + 1].mean() for i in range(len(raw))]
    assert np.allclose([float(r["windowed_score"]) for r in episode], expected, atol=1e-5)
    assert [int(r["called"]) for r in table] == [int(float(r["windowed_score"]) >= 0.5) for r in table]
    assert sum(int(r["called"]) for r in table) == round(frame["recall"] * frame["positives"])
    with pytest.raises(SystemExit):
        main([*args, "--score_window", "-1"])
    assert "--score_window must be 0" in capsys.readouterr().err


def test_evaluation_seeds_must_be_disjoint_from_training_seeds(heldout, tiny_qwen, tmp_path, capsys):
    import shutil

    model = tmp_path / "prm"
    shutil.copytree(tiny_qwen, model)
    seeds = json.loads((__import__("pathlib").Path(heldout) / "meta.json").read_text())["seeds"]
    (model / "prm_config.json").write_text(json.dumps({"dataset_seeds": {"train": seeds["validation"]}}))
    args = ["--prm_model_name_or_path", str(model), "--data", heldout, "--out", str(tmp_path / "e")]
    assert main(args) == 2
    assert "overlap the PRM's training seeds" in capsys.readouterr().err
    assert main(args + ["--allow_seed_overlap", "True"]) == 0
    report = json.loads((tmp_path / "e" / "prm_eval.json").read_text())
    assert report["seed_overlap"] and 0.0 <= report["frame"]["f1"] <= 1.0


def test_a_prm_of_another_camera_is_refused_before_scoring(heldout, tiny_qwen, tmp_path, capsys):
    import shutil

    model = tmp_path / "prm"
    shutil.copytree(tiny_qwen, model)
    (model / "prm_config.json").write_text(json.dumps({"camera": "wrist"}))
    assert main(["--prm_model_name_or_path", str(model), "--data", heldout, "--out", str(tmp_path / "e")]) == 2
    assert "front-camera frames and this PRM was trained on wrist-camera frames" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_threshold_is_tuned_on_validation_episodes_or_a_calibration_set_never_half_of_each(
    heldout, tiny_qwen, tmp_path, capsys
):
    import shutil
    from pathlib import Path

    model = tmp_path / "prm"
    shutil.copytree(tiny_qwen, model)
    seeds = json.loads((Path(heldout) / "meta.json").read_text())["seeds"]
    (model / "prm_config.json").write_text(json.dumps({"dataset_seeds": {"validation": seeds["validation"]}}))
    base = ["--prm_model_name_or_path", str(model), "--data", heldout]
    # half validation episodes, half not: refused before anything is scored
    assert main(base + ["--split", "all", "--out", str(tmp_path / "x"), "--save_threshold", "True"]) == 2
    assert "partly the PRM's validation episodes and partly not" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(base + ["--split", "validation", "--out", str(tmp_path / "x"), "--save_threshold", "True",
                        "--threshold", "0.3"]) == 2  # fmt: skip
    assert "leave --threshold out" in capsys.readouterr().err

    assert main(base + ["--split", "validation", "--out", str(tmp_path / "t"), "--save_threshold", "True"]) == 0
    recorded = json.loads((model / "prm_config.json").read_text())
    tuned = json.loads((tmp_path / "t" / "prm_eval.json").read_text())
    assert recorded["dataset_seeds"] == {"validation": seeds["validation"]}  # the other fields are kept
    assert recorded["decision_threshold_seeds"] == {}  # validation episodes: no calibration set
    assert 0.05 <= recorded["decision_threshold"] <= 0.95
    assert tuned["score_window"] == recorded["score_window"] and 1 <= recorded["score_window"] <= 4
    assert tuned["threshold"] == recorded["decision_threshold"]
    assert tuned["frame"]["f1"] == pytest.approx(recorded["decision_threshold_validation_f1"])
    assert tuned["threshold_source"].startswith("tuned here")
    # later evaluations use the recorded threshold unless told otherwise
    assert main(base + ["--split", "train", "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "prm_eval.json").read_text())
    assert (report["threshold"], report["threshold_source"]) == (recorded["decision_threshold"], "prm_config.json")
    assert main(base + ["--split", "train", "--out", str(tmp_path / "h"), "--threshold", "0.5"]) == 0
    report = json.loads((tmp_path / "h" / "prm_eval.json").read_text())
    assert (report["threshold"], report["threshold_source"]) == (0.5, "--threshold")


def test_a_calibration_set_tunes_window_and_threshold_and_is_never_evaluated_on(heldout, tiny_qwen, tmp_path, capsys):
    """Frames of none of the PRM's seeds calibrate it: the best (window, threshold) on them is
    recorded with their seeds, and evaluating on those episodes afterwards is refused."""
    import shutil
    from pathlib import Path

    from reward.dataset import SPLITS, episode_key, load_rows
    from reward.evaluate_prm import load_prm, score_rows
    from reward.prm_metrics import best_f1_threshold, windowed

    model = tmp_path / "prm"
    shutil.copytree(tiny_qwen, model)
    (model / "prm_config.json").write_text(json.dumps({"dataset_seeds": {"train": {"reach": [10**6]}}}))
    base = ["--prm_model_name_or_path", str(model), "--data", heldout, "--split", "all"]
    assert main(base + ["--out", str(tmp_path / "c"), "--save_threshold", "True", "--max_score_window", "3"]) == 0
    recorded = json.loads((model / "prm_config.json").read_text())
    report = json.loads((tmp_path / "c" / "prm_eval.json").read_text())
    seeds = json.loads((Path(heldout) / "meta.json").read_text())["seeds"]
    assert recorded["decision_threshold_seeds"] == report["evaluation_seeds"]
    assert sum(map(len, recorded["decision_threshold_seeds"].values())) == sum(
        len(v) for split in seeds.values() for v in split.values()
    )
    assert "calibration set" in recorded["decision_threshold_data"]
    # the recorded pair is the best F1 over windows 1..3, recomputed here from the PRM's raw scores
    rows = [r for split in SPLITS for r in load_rows(heldout, split)]
    raw = score_rows(load_prm(str(model), None, 16), rows, 16)
    labels = np.array([r["completion"] for r in rows], bool)
    keys_, frames = [episode_key(r) for r in rows], [r["frame"] for r in rows]
    best = max(best_f1_threshold(windowed(raw, keys_, frames, w), labels)[1] for w in (1, 2, 3))
    assert recorded["decision_threshold_validation_f1"] == pytest.approx(best)
    assert (report["score_window"], report["threshold"]) == (recorded["score_window"], recorded["decision_threshold"])
    # those episodes are no longer held out for this PRM
    assert main(base + ["--out", str(tmp_path / "e")]) == 2
    assert "episodes the PRM's decision threshold was tuned on" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    assert main(base + ["--out", str(tmp_path / "e"), "--allow_seed_overlap", "True"]) == 0
    assert json.loads((tmp_path / "e" / "prm_eval.json").read_text())["seed_overlap"]
    # training episodes never calibrate, not even with the override
    seeds_of = json.loads((Path(heldout) / "meta.json").read_text())["seeds"]["train"]
    (model / "prm_config.json").write_text(json.dumps({"dataset_seeds": {"train": seeds_of}}))
    tune = base + ["--out", str(tmp_path / "t"), "--save_threshold", "True", "--allow_seed_overlap", "True"]
    assert main(tune) == 2
    assert "include the PRM's training episodes" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
