"""Atomic directory writes."""

import os

import pytest

from vla_rl.atomic import atomic_directory


def test_success_replaces_the_old_directory(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_directory(str(out), overwrite=True) as tmp:
        (tmp_path / os.path.basename(tmp) / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # untouched until the block succeeds
    assert sorted(os.listdir(out)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_a_crash_leaves_the_old_directory_and_no_debris(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(str(out), overwrite=True) as tmp:
            (tmp_path / os.path.basename(tmp) / "half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert sorted(os.listdir(out)) == ["old.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_existing_target_needs_overwrite(tmp_path):
    with pytest.raises(FileExistsError, match="--checkpoint_dir .* --overwrite"):
        with atomic_directory(str(tmp_path), flag="--checkpoint_dir"):
            pass
