"""Atomic directory writes: a crash mid-write never leaves a partial directory at the target."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_directory(out: str, overwrite: bool = False, flag: str = "--out") -> Iterator[str]:
    """Yield a fresh temporary directory beside ``out``; when the block succeeds it takes the
    place of ``out`` (an existing ``out`` is removed only after the swap), when it fails it is
    deleted. Raises ``FileExistsError`` naming ``flag`` if ``out`` exists and not ``overwrite``."""
    out = out.rstrip(os.sep)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{flag} {out} already exists; pass --overwrite to replace it.")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out):
        old = f"{out}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
