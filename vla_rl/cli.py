"""Command-line helpers shared by the entry points."""

from __future__ import annotations

import argparse

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
