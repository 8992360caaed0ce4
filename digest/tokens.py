"""Signed tokens (unsubscribe, feedback page, one per vote) and the secret that keys them.

The secret comes from $DIGEST_SECRET, or else from ``<data_dir>/secret``, created once
with random bytes and mode 0600. Tokens are HMAC-SHA256 of the purpose and the
subscriber's name (with the paper key, for a vote), checked in constant time. A token
stops working when the secret changes or the subscriber leaves the config.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from .errors import StoreError

SECRET_ENV = "DIGEST_SECRET"


def load_secret(data_dir: Path, *, create: bool = True) -> bytes | None:
    """The token key: $DIGEST_SECRET, or the data folder's own secret (made on first use).

    With ``create=False`` a missing secret file gives None and nothing is written.
    """
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env.encode("utf-8")
    path = data_dir / "secret"
    try:
        if path.is_file():
            return _read_secret(path)
        if not create:
            return None
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".secret.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:  # written whole, then renamed: never half a key
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process made one first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return _read_secret(path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read or create the token secret: {exc.strerror}; "
                         f"or set {SECRET_ENV}") from None


def _read_secret(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # readable only by its owner
    value = path.read_bytes().strip()
    if len(value) < 32:
        raise StoreError(f"{path}: the token secret is empty or too short; delete the file to "
                         f"make a new one (links in mail already sent stop working) or set "
                         f"{SECRET_ENV}")
    return value


def sign(secret: bytes, purpose: str, name: str) -> str:
    """A URL-safe token binding ``purpose`` (e.g. "unsubscribe") to a subscriber."""
    return hmac.new(secret, f"{purpose}\x00{name}".encode(), hashlib.sha256).hexdigest()[:40]


def verify(secret: bytes, purpose: str, name: str, token: str) -> bool:
    """True when ``token`` is the one ``sign`` gives (constant-time compare)."""
    return hmac.compare_digest(sign(secret, purpose, name).encode(), token.encode("utf-8",
                                                                                  "replace"))


UNSUBSCRIBE = "unsubscribe"  # one subscriber's e-mail on or off (List-Unsubscribe)
FEEDBACK = "feedback"  # one subscriber's feedback page: list and undo their votes


def vote_purpose(like: bool, public: bool = False) -> str:
    """The purpose a vote token is signed for: a like and a dislike are different tokens,
    and so are the links of public site pages (``public``), which lead to no feedback page."""
    return ("site-" if public else "") + ("vote-like" if like else "vote-dislike")


def vote_subject(name: str, key: str) -> str:
    """What a vote token binds: the subscriber and the paper key (names hold no NUL)."""
    return f"{name}\x00{key}"
