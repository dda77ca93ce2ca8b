"""Reading the versioned ``meta.json`` files that describe on-disk datasets."""

from __future__ import annotations

import json
import os


def read_versioned_json(path: str, version: int, missing_message: str) -> dict:
    """The JSON object at ``path``; ``FileNotFoundError(missing_message)`` if there is none, and
    ``ValueError`` unless its ``format_version`` equals ``version``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_message)
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format_version") != version:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}, expected {version}.")
    return meta
