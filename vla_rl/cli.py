"""Command-line helpers shared by the entry points."""

from __future__ import annotations

import argparse
import math

TRUE = {"true", "1", "yes", "y", "on"}
FALSE = {"false", "0", "no", "n", "off"}


def str2bool(value) -> bool:
    """Booleans written as values: ``--flag True``, ``--flag false``, ``--flag 1``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def require_positive(value: float, flag: str) -> None:
    """Raise naming ``flag`` unless ``value`` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} must be a positive number, got {value}.")


def require_at_least(value, low, flag: str) -> None:
    """Raise naming ``flag`` unless ``value`` is a finite number >= ``low``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
        raise ValueError(f"{flag} must be >= {low}, got {value}.")


def require_between(value, low, high, flag: str) -> None:
    """Raise naming ``flag`` unless ``value`` is a finite number in ``[low, high]``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{flag} must be in [{low}, {high}], got {value}.")


def require_frame_side(value: int, flag: str) -> None:
    """Raise naming ``flag`` unless ``value`` is 0 (the default size) or a frame side in 16..256 px."""
    if value and not 16 <= value <= 256:
        raise ValueError(f"{flag} must be 0 or in 16..256, got {value}.")
