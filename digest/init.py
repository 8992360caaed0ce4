"""``digest init``: a new deployment in a folder, from the starter bundled in the package.

Writes a commented ``config.toml`` (one subscriber, inbox, feeds, site) and an ``inbox/``
holding a small invented sample dump, so that ``digest run`` makes a first digest at once.
Never overwrites: an existing ``config.toml`` is refused, an existing sample is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .errors import OutputError, UsageError

SAMPLE = "sample-daily-papers.txt"


@dataclass(frozen=True, slots=True)
class Started:
    """What ``init`` wrote."""

    folder: Path
    config: Path
    sample: Path
    subscriber: str  # the starter subscriber's name
    papers: int  # entries in the sample dump


def _starter(*parts: str) -> bytes:
    return files(__package__ or "digest").joinpath("starter", *parts).read_bytes()


def init(folder: Path | str = ".") -> Started:
    """Write the starter config and sample inbox into ``folder`` (created if missing).

    UsageError (exit 2) when ``folder`` already has a ``config.toml`` or is not a folder;
    OutputError (exit 1) when it cannot be written.
    """
    root = Path(folder)
    config = root / "config.toml"
    if config.exists() or config.is_symlink():
        raise UsageError(f"{config} already exists; digest init never overwrites it (remove "
                         "it, or choose another folder: digest init FOLDER)")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    text = _starter("config.toml")
    sample = _starter("inbox", SAMPLE)
    inbox = root / "inbox"
    target = inbox / SAMPLE
    try:
        inbox.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_bytes(sample)
        # "x": created here, or an error; never a config someone wrote meanwhile replaced
        with open(config, "xb") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except FileExistsError:
        raise UsageError(f"{config} already exists; digest init never overwrites it") from None
    except OSError as exc:
        raise OutputError(f"{root}: cannot write the starter files ({exc})") from None
    from datetime import UTC, datetime

    from .sources import parse_text

    today = datetime.now(UTC).date()
    papers = parse_text(SAMPLE, sample.decode("utf-8"), today=today).papers
    return Started(root, config, target, "me", len(papers))
