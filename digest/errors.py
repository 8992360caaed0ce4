"""Every error digest raises on purpose, in one tree.

    DigestError                 base: cli.py catches this and prints one line
    ├── UsageError              bad command-line use                    (exit 2)
    ├── ConfigError             config file problems, each naming a key (exit 2)
    ├── InputError              a file that is not a page dump          (exit 2)
    ├── LockedError             another digest holds the data folder    (exit 2)
    ├── StoreError              the SQLite store cannot be used         (exit 1)
    ├── DeliveryError           the SMTP server refused us (auth, TLS)   (exit 1)
    └── OutputError             a digest or feed cannot be written      (exit 1)

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class DigestError(Exception):
    """Base class: a problem digest can explain in one line."""

    exit_code = 1


class UsageError(DigestError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class ConfigError(DigestError):
    """One or more problems in the config file, each naming its key."""

    exit_code = 2

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("; ".join(
            f"{path}:{p}" if p[:1].isdigit() else f"{path}: {p}" for p in self.problems))


class InputError(DigestError):
    """A file handed to digest is not a page dump it can read."""

    exit_code = 2

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class LockedError(DigestError):
    """Another digest process holds the data folder's lock."""

    exit_code = 2


class StoreError(DigestError):
    """The store is unusable (locked, corrupt, from a newer digest, the server gone)."""


class MovedOn(StoreError):
    """A reader's cursor moved while their digest was made: another worker recorded it."""


class DeliveryError(DigestError):
    """Sending stopped: the SMTP server cannot be used as configured (nothing was marked)."""


class OutputError(DigestError):
    """A digest, feed or temporary file could not be written."""
