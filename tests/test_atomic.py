"""Atomic output folders: the new folder replaces the old only on success, with ordinary permissions."""

import os
import stat

import pytest

from edge_quamba.atomic import atomic_output_dir


def test_success_replaces_existing_output_with_mkdir_permissions(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    reference = tmp_path / "made_by_mkdir"
    reference.mkdir()
    assert stat.S_IMODE(os.stat(out).st_mode) == stat.S_IMODE(os.stat(reference).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made_by_mkdir", "out"]  # no temporary left behind


def test_failure_keeps_existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "partial.txt").write_text("partial")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
