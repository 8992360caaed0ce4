"""Publishing files atomically: readers see the old file or the new one, never half.

A file is written in full to a temporary file, fsynced, and renamed over its target.
The temporary file lives in a hidden ``.digest-tmp`` folder beside the target (the same
file system, so the rename is atomic), created mode 0700 and removed again once empty;
the file itself stays mode 0600 until it is complete. A web server publishing the folder
therefore never finds a partial or stray copy there between writes, and a server running
as another user cannot read one even during a write. A process killed mid-write leaves
its temporary file behind: ``remove_stale_temps`` removes such leftovers (only names of
our own pattern) at the start of the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError
from .faults import checkpoint

TEMP_DIR = ".digest-tmp"
# mkstemp names: our prefix, then 8 characters of tempfile's alphabet, then our suffix.
_TEMP_NAME = re.compile(r"^[^/]+\.[a-z0-9_]{8}\.tmp$")
# What earlier versions left directly in the folder: ".<target>.<8 chars>.tmp", where
# the target is one of the files digest writes (a feed, a digest, an .eml).
_LEGACY_TEMP_NAME = re.compile(r"^\.[^/]+\.(?:atom|md|html|eml)\.[a-z0-9_]{8}\.tmp$")
DEFAULT_MODE = 0o644


CLEAN_MARK = ".digest-clean"  # in the data folder: no write of ours is under way


@dataclass(slots=True)
class _Section:
    mark: Path
    was_clean: bool  # the mark was there when the section opened
    dirty: bool = False


_sections: list[_Section] = []  # the publishing sections open in this process


@contextmanager
def publishing(data_dir: Path, *, restore: bool = True) -> Iterator[None]:
    """Writes within may leave temporary files if the process dies: the first of them
    durably removes the data folder's clean mark, and a clean exit puts it back. So a run
    looks for leftovers (``leftovers_possible``) only after a write was cut short, instead
    of in every folder every time. A section that found the mark missing (leftovers may be
    waiting for a run) never puts it back. Another writer finishing meanwhile can put the
    mark back early; the worst that does is leave a stale temporary file in a hidden
    folder. ``restore=False``: never put it back (a helper process of a run, whose writes
    the run's own section answers for)."""
    section = _Section(data_dir / CLEAN_MARK,
                       restore and os.path.exists(data_dir / CLEAN_MARK))
    _sections.append(section)
    try:
        yield
        if section.dirty and section.was_clean:
            mark_clean(data_dir)
    finally:
        _sections.remove(section)


def mark_unclean(data_dir: Path) -> None:
    """Leftovers may exist (another process's writes were cut short): the next run looks."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / CLEAN_MARK).unlink()
        _fsync_folder(data_dir)


def leftovers_possible(data_dir: Path) -> bool:
    """False when every write of ours finished (the data folder's clean mark is there)."""
    return not os.path.exists(data_dir / CLEAN_MARK)


def mark_clean(data_dir: Path) -> None:
    """No write of ours is under way and no leftover is known (best effort)."""
    with contextlib.suppress(OSError):
        (data_dir / CLEAN_MARK).touch()


def _writing() -> None:
    for section in _sections:
        if not section.dirty:
            section.dirty = True
            try:
                section.mark.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise OutputError(f"{section.mark}: cannot remove: {exc.strerror}; check the "
                                  "data folder is writable") from None
            _fsync_folder(section.mark.parent)  # gone for good before any temporary file


def atomic_write(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` via temp file + fsync + rename; False if already identical.

    A new file gets mode 0644; a file that exists keeps its mode.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OutputError(f"{path}: cannot read: {exc.strerror}") from None
    _writing()
    try:
        _replace(path, data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror}; check the folder exists "
                          "and is writable") from None
    return True


def _replace(path: Path, data: bytes) -> None:
    mode = _mode_of(path)
    folder = _temp_folder(path.parent)
    try:
        fd, name = _mkstemp(folder, path)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            checkpoint(f"write:{path.suffix.lstrip('.') or 'file'}")
            os.chmod(tmp, mode)  # readable only now that it is complete
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        _remove_if_empty(folder)
    _fsync_folder(path.parent)


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return DEFAULT_MODE


def _temp_folder(parent: Path) -> Path:
    """``parent/.digest-tmp``, created (mode 0700) if needed."""
    folder = parent / TEMP_DIR
    parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        if folder.is_symlink() or not folder.is_dir():
            raise OutputError(f"{folder}: is not a folder; digest keeps its temporary files "
                              "there while it writes: remove it") from None
    return folder


def _mkstemp(folder: Path, path: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=folder, prefix=f"{path.name}.", suffix=".tmp")
    except FileNotFoundError:  # another writer has just removed the empty folder
        _temp_folder(folder.parent)
        return tempfile.mkstemp(dir=folder, prefix=f"{path.name}.", suffix=".tmp")


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (another writer), or already gone
        folder.rmdir()


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_stale_temp(path: Path) -> bool:
    """True for a name only digest's own temporary files have (in ``.digest-tmp`` or, from
    earlier versions, a hidden ``.<target>.XXXXXXXX.tmp`` beside the target)."""
    if path.parent.name == TEMP_DIR:
        return bool(_TEMP_NAME.match(path.name))
    return bool(_LEGACY_TEMP_NAME.match(path.name))


def stale_temps(folder: Path, *, legacy: bool = True) -> list[Path]:
    """Temporary files an interrupted write left in ``folder`` (regular files only).

    Without ``legacy``, one look-up when there are none (no ``.digest-tmp`` folder): the
    folder itself is not listed for the names earlier versions used.
    """
    found: list[Path] = []
    for where in ((folder, folder / TEMP_DIR) if legacy else (folder / TEMP_DIR,)):
        if not os.path.isdir(where) or os.path.islink(where):
            continue
        try:
            found += [p for p in sorted(Path(where).iterdir())
                      if is_stale_temp(p) and p.is_file() and not p.is_symlink()]
        except OSError:
            continue
    return found


def remove_stale_temps(folder: Path) -> list[tuple[Path, str]]:
    """Remove what ``stale_temps`` finds; return (file, why) for each that stays.

    Call it only while holding the lock of every writer of ``folder``: a temporary file
    is stale only if no one is writing it.
    """
    problems: list[tuple[Path, str]] = []
    found = stale_temps(folder)
    if not found and not os.path.isdir(folder / TEMP_DIR):
        return problems
    for path in found:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append((path, str(exc.strerror)))
    _remove_if_empty(folder / TEMP_DIR)
    return problems


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (created if missing), or None."""
    if os.path.lexists(folder) and not folder.exists():
        return f"{folder} is a broken symbolic link"
    if not folder.exists():
        return _creation_problem(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    temp = folder / TEMP_DIR
    if os.path.lexists(temp) and (temp.is_symlink() or not temp.is_dir()):
        return f"{temp} is not a folder (digest writes its temporary files there); remove it"
    return None


def _creation_problem(folder: Path) -> str | None:
    """Why ``folder``, which does not exist, cannot be created (None when it can)."""
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {folder}: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {folder}: {parent} is not writable"
    return None


PUBLISHER_FILE = "publisher"  # in the data folder: who publishes this folder's files


def publisher_id(data_dir: Path) -> str:
    """This data folder's publisher id: made once (random), kept in the folder. Two hosts
    with their own data folders on one store are two publishers."""
    path = data_dir / PUBLISHER_FILE
    with contextlib.suppress(OSError):
        found = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{12}", found):
            return found
    made = os.urandom(6).hex()
    with contextlib.suppress(OSError):
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, f"{made}\n".encode("ascii"))
        return path.read_text(encoding="ascii").strip()
    return made  # an unwritable folder: the check of the output folders says so
