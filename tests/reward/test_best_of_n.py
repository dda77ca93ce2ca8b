"""Best-of-N selection: the curves on a constructed case, and a real run with the oracle PRM."""

import json

import numpy as np

from reward.best_of_n import main, selection_curves


def test_selection_curves_hand_computed():
    successes = np.array([[0, 1, 0, 0], [0, 0, 0, 1]], bool)
    scores = np.array([[0.2, 0.9, 0.1, 0.3], [0.8, 0.1, 0.2, 0.5]])
    curves = selection_curves(successes, scores, [1, 2, 4])
    assert curves["oracle"] == [0.0, 0.5, 1.0]
    assert curves["random"] == [0.0, 0.25, 0.25]
    # state 0: the PRM picks rollout 1 (success) once it is available; state 1: always rollout 0
    assert curves["prm"] == [0.0, 0.5, 0.5]


def test_expert_best_of_n_with_the_oracle_matches_oracle_selection(tmp_path):
    out = tmp_path / "bon"
    assert (
        main(
            [
                "--prm_model_name_or_path",
                "oracle",
                "--tasks",
                "reach",
                "--num_states",
                "3",
                "--n",
                "1",
                "4",
                "--image_size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "best_of_n.json").read_text())
    overall = report["overall"]
    assert overall["n"] == [1, 4]
    assert overall["prm"] == overall["oracle"]  # privileged success picks a successful rollout whenever one exists
    assert overall["oracle"][1] >= overall["random"][1]
    assert (out / "best_of_n.png").stat().st_size > 1000
