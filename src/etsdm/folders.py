"""Writing a folder so that readers find it whole or not at all, even if the writer is killed.

A writer fills a temporary folder beside the final one and publishes it with
:func:`publish_folder`: every file and folder in it is fsynced, then it is renamed to the final
name in one step; with ``replace=True`` an existing final folder is first renamed aside, put back
if the rename fails, and removed once the new one is in place. :func:`staged_folder` does the
bookkeeping around it (a fresh temporary folder, removed again on any failure).

Names beside ``FINAL`` (one writer per process)::

    .FINAL.tmp<pid>   the new folder being written       (temporary_folder)
    .FINAL.old<pid>   the old folder being replaced      (between the two renames of replace=True)

A writer killed at any point (SIGKILL, power loss) leaves ``FINAL`` as the old folder, the new
one, or -- killed between the two renames -- absent, with the old one whole in ``.FINAL.old<pid>``.
:func:`remove_stale_temporaries` (which :func:`staged_folder` calls first) puts such a folder back
and removes what writers whose process is gone left behind; a live writer's folders are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

TMP, OLD = "tmp", "old"  # the kinds of folder beside FINAL: .FINAL.tmp<pid>, .FINAL.old<pid>


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the file system allows it."""
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fsync_file(path)


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, then every folder's entries, ``folder``'s own last."""
    dirs = [folder]
    for p in sorted(folder.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            dirs.append(p)
        elif p.is_file() and not p.is_symlink():
            fsync_file(p)
    for d in reversed(dirs):
        fsync_dir(d)


def temporary_folder(final: Path) -> Path:
    """The folder this process fills before :func:`publish_folder` puts it at ``final``."""
    return _beside(final, TMP, os.getpid())


def _beside(final: Path, kind: str, pid: int) -> Path:
    return final.with_name(f".{final.name}.{kind}{pid}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Clean up after killed writers of ``final`` (their process is gone): an old folder left
    between the two renames of a replacement goes back to ``final`` when ``final`` is absent (else
    it is removed), and their temporary folders are removed. Returns the removed paths."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(final.name)}\.({TMP}|{OLD})(\d+)")
    stale = [(m.group(1), p) for p in final.parent.iterdir()
             if (m := pattern.fullmatch(p.name)) and not _alive(int(m.group(2)))]
    removed = []
    for kind, p in sorted(stale, key=lambda s: s[0] != OLD):  # put an old folder back before anything else
        if kind == OLD and not final.exists():
            with contextlib.suppress(OSError):  # another writer published meanwhile: remove it below
                os.replace(p, final)
                fsync_dir(final.parent)
                continue
        _remove(p)
        removed.append(p)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish_folder(tmp: Path, final: Path, *, replace: bool, aside: Path | None = None) -> bool:
    """Put the fully written folder ``tmp`` at ``final`` in one rename, fsynced (module doc).

    Args:
        replace: an existing ``final`` is replaced whole: renamed to ``aside`` (default
            ``.FINAL.old<pid>``), put back if the rename of ``tmp`` fails, removed once ``tmp`` is
            in place. Else an existing non-empty ``final`` is kept (another writer published first).
        aside: where the replaced folder waits (a writer with its own clean-up names it).

    Returns:
        True when ``tmp`` is now ``final``; False when ``final`` was kept (``tmp`` is removed). An
        empty ``final`` folder counts as absent (the rename replaces it).

    Raises:
        OSError: a rename failed for another reason (the old ``final``, if any, is back in place).
    """
    fsync_tree(tmp)
    if replace and final.exists():
        _replace(tmp, final, aside or _beside(final, OLD, os.getpid()))
    else:
        try:
            os.rename(tmp, final)  # fails on an existing non-empty folder: the first writer wins
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    fsync_dir(final.parent)
    return True


def _replace(tmp: Path, final: Path, aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    fsync_dir(final.parent)  # the new folder is in place before the old one goes
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A fresh, empty :func:`temporary_folder` of ``final`` to fill and then :func:`publish_folder`;
    stale temporaries of killed writers are cleaned up first (:func:`remove_stale_temporaries`),
    and the folder is removed on the way out if it was not published (an error, or False)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = temporary_folder(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
