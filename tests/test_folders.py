"""etsdm.folders: a folder is published whole or not at all (replacing an existing one or keeping
it), fsynced before the rename, and a writer killed at any step leaves the old folder or the new
one complete once the next writer has cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import etsdm.folders as folders
from etsdm.folders import publish_folder, remove_stale_temporaries, staged_folder, temporary_folder


def _folder(path: Path, text: str) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "a.txt").write_text(text)
    (path / "sub" / "b.txt").write_text(text)
    return path


def _content(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


OLD = {"a.txt": "old", "sub/b.txt": "old"}
NEW = {"a.txt": "new", "sub/b.txt": "new"}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_replace_puts_the_new_folder_in_place_whole(tmp_path):
    final = _folder(tmp_path / "final", "old")
    (final / "only_in_old.txt").write_text("x")
    assert publish_folder(_folder(temporary_folder(final), "new"), final, replace=True) is True
    assert _content(final) == NEW  # no stray file of the old folder
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_without_replace_an_existing_folder_is_kept(tmp_path):
    final = _folder(tmp_path / "final", "old")
    tmp = _folder(temporary_folder(final), "new")
    assert publish_folder(tmp, final, replace=False) is False
    assert _content(final) == OLD and not tmp.exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder counts as absent
    assert publish_folder(_folder(temporary_folder(empty), "new"), empty, replace=False) is True
    assert _content(empty) == NEW
    absent = tmp_path / "absent"
    assert publish_folder(_folder(temporary_folder(absent), "new"), absent, replace=False) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["absent", "empty", "final"]


def test_every_file_and_folder_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    final = _folder(tmp_path / "final", "old")
    tmp = _folder(temporary_folder(final), "new")
    events: list[tuple[str, Path]] = []
    real_fsync, real_replace = folders.fsync_file, os.replace
    monkeypatch.setattr(folders, "fsync_file", lambda p: events.append(("fsync", Path(p))) or real_fsync(p))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("rename", Path(b))) or real_replace(a, b))
    publish_folder(tmp, final, replace=True)
    first_rename = events.index(("rename", final))
    synced = {p for kind, p in events[:first_rename] if kind == "fsync"}
    assert synced >= {tmp, tmp / "sub", tmp / "a.txt", tmp / "sub" / "b.txt"}
    assert ("fsync", tmp_path) in events[first_rename:]  # the rename itself reaches the disk


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "interrupt"])
def test_a_failed_rename_puts_the_old_folder_back(error, tmp_path, monkeypatch):
    final = _folder(tmp_path / "final", "old")
    real = os.replace

    def failing(src, dst):
        if Path(src).name.startswith(".final.tmp"):  # the new folder's move into place
            raise error
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(type(error)), staged_folder(final) as tmp:
        _folder(tmp, "new")
        publish_folder(tmp, final, replace=True)
    assert _content(final) == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # staged_folder removed its folder


KILLED_WRITER = """
import importlib.util, os, shutil, signal, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("folders", sys.argv[1])
folders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(folders)
final, point = Path(sys.argv[2]), sys.argv[3]
die = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
real_replace, real_rmtree, real_fsync = os.replace, shutil.rmtree, folders.fsync_file
if point == "fsync":
    folders.fsync_file = lambda p: die() if p.name == "b.txt" else real_fsync(p)
os.replace = lambda a, b: die() if point == "moved aside" and Path(b) == final else real_replace(a, b)
shutil.rmtree = lambda p, **kw: die() if point == "new in place" and ".old" in Path(p).name and Path(p).exists() \\
    else real_rmtree(p, **kw)
with folders.staged_folder(final) as tmp:
    (tmp / "sub").mkdir()
    (tmp / "a.txt").write_text("new")
    if point == "writing":
        die()
    (tmp / "sub" / "b.txt").write_text("new")
    folders.publish_folder(tmp, final, replace=True)
"""


@pytest.mark.parametrize(("point", "survivor"), [("writing", OLD), ("fsync", OLD), ("moved aside", OLD),
                                                 ("new in place", NEW)])
def test_a_killed_writer_leaves_the_old_or_the_new_folder_whole(point, survivor, tmp_path):
    """SIGKILL at each step of a replacement; the next writer's clean-up (remove_stale_temporaries)
    leaves ``final`` complete: the old folder until the new one is in place, then the new one."""
    final = _folder(tmp_path / "final", "old")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), folders.__file__, str(final), point],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".final.") and (left[1] == "final") != (point == "moved aside"), left
    remove_stale_temporaries(final)
    assert _content(final) == survivor
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    final = _folder(tmp_path / "final", "new")
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = [tmp_path / f".final.tmp{dead}", tmp_path / f".final.old{dead}"]
        kept = [temporary_folder(final), tmp_path / f".final.tmp{live.pid}", tmp_path / ".final.tmpx",
                tmp_path / f".finalx.tmp{dead}", tmp_path / f".final.lock{dead}"]
        for p in stale + kept:
            p.mkdir()
        assert sorted(remove_stale_temporaries(final)) == sorted(stale)
        assert all(p.is_dir() for p in kept) and _content(final) == NEW  # final present: the old one goes
    finally:
        live.kill()
        live.wait()
