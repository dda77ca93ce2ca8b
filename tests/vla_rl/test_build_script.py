"""`scripts/build_default_models.sh` refuses bad settings before any stage runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_default_models.sh"


def run_build(tmp_path, **settings):
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work"), **settings}
    return subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"PRM_PRESET": "big"}, "PRM_PRESET must be vla-small (7-px patches) or prm-small"),
        ({"PRM_CAMERA": "top"}, "PRM_CAMERA must be front, wrist or front+wrist, got 'top'"),
        ({"VLA_IMAGE_SIZE": "100"}, "VLA_IMAGE_SIZE must be a frame side in pixels that is a multiple of 14"),
        ({"PRM_IMAGE_SIZE": "big"}, "PRM_IMAGE_SIZE must be a frame side in pixels that is a multiple of 14"),
        ({"STAGES": "vla policy"}, "STAGES may hold 'vla', 'prm' and 'calibrate', got 'policy'"),
        ({"PRM_CALIBRATION_EPISODES": "1"}, "PRM_CALIBRATION_EPISODES must be a whole number >= 2"),
        ({"PRM_HELDOUT_EPISODES": "many"}, "PRM_HELDOUT_EPISODES must be a whole number >= 2"),
        ({"PRM_CONTINUE": "/nonexistent/prm"}, "PRM_CONTINUE must name a trained PRM"),
        ({"PRM_LEARNING_RATE": "fast"}, "PRM_LEARNING_RATE must be a positive number"),
        ({"PRM_ROUND_LEARNING_RATE": "-1"}, "PRM_ROUND_LEARNING_RATE must be a positive number"),
        ({"PRM_ROUNDS": "500:1000 1000"}, "PRM_ROUNDS takes rounds written EPISODES:STEPS"),
        ({"PRM_ROUNDS": "0:1000"}, "got '0:1000'"),
        (
            {"STAGES": "calibrate", "PRM_OUT": "/nonexistent/prm", "PRM_POLICY_STATES": "0"},
            "STAGES=calibrate re-chooses the threshold of an installed PRM, and /nonexistent/prm holds none",
        ),
        ({"THREADS": "two"}, "THREADS must be a whole number >= 1"),
    ],
)
def test_a_bad_setting_stops_the_build_with_its_name(tmp_path, settings, named):
    result = run_build(tmp_path, **settings)
    assert result.returncode == 2
    assert named in result.stderr
    assert not (tmp_path / "work").exists()  # nothing was started
