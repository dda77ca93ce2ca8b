"""The initial-state seed ranges (`vla_rl.seed_ranges`) and the build script's copies of them."""

import re
from itertools import pairwise
from pathlib import Path

from vla_rl import seed_ranges

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_default_models.sh"


def test_the_build_script_uses_the_same_seed_ranges():
    script = BUILD_SCRIPT.read_text()
    constants = {name: int(value) for name, value in re.findall(r"^([A-Z_]+_SEED)=(\d+)", script, re.MULTILINE)}
    assert constants == {
        "HELDOUT_SEED": seed_ranges.PRM_HELDOUT,
        "POLICY_SEED": seed_ranges.DAGGER,
        "POLICY_HELDOUT_SEED": seed_ranges.PRM_POLICY_HELDOUT,
        "CALIBRATION_SEED": seed_ranges.PRM_CALIBRATION,
    }


def test_the_ranges_are_at_least_200_000_apart():
    starts = sorted(value for name, value in vars(seed_ranges).items() if name.isupper() and isinstance(value, int))
    assert len(starts) == 8 and all(b - a >= 200_000 for a, b in pairwise(starts))
