"""Fetching live sources into the inbox, politely (the poll stage of the daemon).

Every fetched document is saved as a dump in the inbox, so a run is reproducible from
dumps and the diff treats all sources alike. Requests carry a User-Agent naming digest,
time out, retry transient failures with back-off (honouring Retry-After), and send the
last ETag / Last-Modified so an unchanged source costs one 304. arXiv asks for one
request every 3 seconds. A failing source is reported and skipped; the others still run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx

from . import __version__
from .config import Config, SourceConfig
from .errors import InputError
from .fsutil import atomic_write
from .sources import decode, inbox_files, parse_text
from .store import Store

Clock = Callable[[], datetime]
TRIES = 3
ARXIV_SPACING = 3.0  # seconds between requests, as arXiv's terms of use ask
MAX_BYTES = 20_000_000  # a listing is a few MB at most: anything bigger is refused
_EXTENSIONS = {"hf-daily": "json", "hf-page": "html", "arxiv": "xml", "feed": "xml"}
_last_arxiv = 0.0  # time.monotonic() of this process's last arXiv request (any module)


def arxiv_free_at() -> float:
    """The monotonic time before which this process must not ask arXiv again."""
    return _last_arxiv + ARXIV_SPACING


def note_arxiv(at: float) -> None:
    """Another part of the process (enrichment) asked arXiv at ``at``."""
    global _last_arxiv
    _last_arxiv = max(_last_arxiv, at)


@dataclass(slots=True)
class PollReport:
    """What one poll of the sources did."""

    saved: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # dumps to ingest from folder sources


def user_agent(config: Config) -> str:
    """``digest/0.1 (+https://example.org/digest/)``."""
    where = f"+{config.site_url}" if config.site_url else "papers-digest"
    return f"digest/{__version__} ({where})"


def _params(source: SourceConfig) -> dict[str, str]:
    if source.type == "hf-daily" and source.date:
        return {"date": source.date}
    if source.type == "arxiv":
        return {"search_query": source.query or "", "start": "0",
                "max_results": str(source.max_results), "sortBy": "submittedDate",
                "sortOrder": "descending"}
    return {}


class _TooSlow(RuntimeError):
    """The whole download took longer than the deadline (a server dripping bytes).

    Not retried: a server that slow would hold the daemon for TRIES times as long."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """One HTTP answer, body read in full."""

    status: int
    reason: str
    headers: httpx.Headers
    body: bytes


def _download(client: httpx.Client, url: str, params: dict[str, str], headers: dict[str, str],
              deadline: float) -> Fetched:
    """GET the body in chunks, refusing one over MAX_BYTES or past the deadline."""
    with client.stream("GET", url, params=params, headers=headers) as response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BYTES:
                raise RuntimeError(f"the document is over {MAX_BYTES // 1_000_000} MB; refused")
            if time.monotonic() > deadline:
                raise _TooSlow("the download took too long")
            chunks.append(chunk)
        return Fetched(response.status_code, response.reason_phrase, response.headers,
                       b"".join(chunks))


def _get(client: httpx.Client, source: SourceConfig, headers: dict[str, str],
         sleep: Callable[[float], None]) -> Fetched:
    """GET with bounded retries on time-outs, connection errors, 429 and 5xx."""
    global _last_arxiv
    assert source.url is not None
    timeout = client.timeout.read or 30.0
    for attempt in range(1, TRIES + 1):
        deadline = time.monotonic() + 4 * timeout
        if source.type == "arxiv":
            wait = _last_arxiv + ARXIV_SPACING - time.monotonic()
            if wait > 0:
                sleep(wait)
            _last_arxiv = time.monotonic()
        try:
            response = _download(client, source.url, _params(source), headers, deadline)
        except httpx.TransportError:
            if attempt == TRIES:
                raise
            sleep(2.0 ** (attempt - 1))
            continue
        if response.status == 429 or response.status >= 500:
            if attempt == TRIES:
                return response
            retry_after = response.headers.get("Retry-After", "")
            delay = float(retry_after) if retry_after.isdigit() else 2.0 ** (attempt - 1)
            sleep(min(delay, 60.0))
            continue
        return response
    raise AssertionError("unreachable")


def fetch_source(client: httpx.Client, config: Config, store: Store, source: SourceConfig,
                 now: Clock, sleep: Callable[[float], None], report: PollReport) -> None:
    """Fetch one source; save a new document as a dump, or note it unchanged."""
    assert source.url is not None
    identity = f"{source.url}?{urlencode(_params(source))}"  # validators belong to this URL
    etag, modified = store.source_validators(source.name, identity)
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    response = _get(client, source, headers, sleep)
    if response.status == 304:
        store.set_source_state(source.name, now(), "304")
        report.unchanged.append(source.name)
        return
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} {response.reason}")
    stamp = now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = config.inbox / f"{source.name}-{stamp}.{_EXTENSIONS[source.type]}"
    text = _text(str(target), response)
    parsed = parse_text(str(target), text, today=now().date(), allow_empty=True)
    expected = _PARSERS[source.type]
    if not parsed.shape.startswith(expected):
        raise RuntimeError(f"expected {expected} content from {source.type}, got "
                           f"{parsed.shape} (an error or login page?); nothing saved")
    validators = {"etag": response.headers.get("ETag"),
                  "last_modified": response.headers.get("Last-Modified")}
    if not parsed.papers or store.find_dump(parsed.sha256) is not None:  # nothing new to keep
        store.set_source_state(source.name, now(), "200 unchanged", keep_validators=False,
                               url=identity, **validators)
        report.unchanged.append(source.name)
        return
    atomic_write(target, text.encode("utf-8"))
    store.set_source_state(source.name, now(), "200", keep_validators=False, url=identity,
                           **validators)
    report.saved.append(str(target))


_PARSERS = {"hf-daily": "hf-daily", "hf-page": "hf-page", "arxiv": "feed", "feed": "feed"}
_XML_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']")


def _text(path: str, response: Fetched) -> str:
    """The body as text: UTF-8, else the charset the response or the XML prolog declares."""
    try:
        return decode(path, response.body)
    except InputError:
        declared = response.headers.get("Content-Type", "").partition("charset=")[2]
        prolog = _XML_ENCODING.match(response.body[:200])
        charset = declared.strip(' "') or (prolog.group(1).decode() if prolog else "")
        if not charset:
            raise
        try:
            text = response.body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            raise InputError(path, f"cannot decode the document as {charset}") from None
        if prolog:  # the saved copy is UTF-8: say so
            text = re.sub(r"encoding=[\"'][A-Za-z0-9._-]+[\"']", 'encoding="utf-8"', text, count=1)
        return text.replace("\r\n", "\n").replace("\r", "\n")


def poll(config: Config, store: Store, *, now: Clock, timeout: float = 30.0,
         sleep: Callable[[float], None] = time.sleep,
         log: Callable[[str], None] | None = None,
         stop: Callable[[], bool] = lambda: False) -> PollReport:
    """Fetch every configured source once; each failure is reported, never fatal.

    ``stop`` is asked between sources (a SIGTERM waits for one fetch, not for all).
    """
    report = PollReport()
    say = log or (lambda _line: None)
    headers = {"User-Agent": user_agent(config)}
    with httpx.Client(timeout=timeout, headers=headers, follow_redirects=True) as client:
        for source in config.sources:
            if stop():
                say("stopping: the remaining sources wait for the next run")
                break
            if source.type == "folder":
                assert source.path is not None
                if not source.path.is_dir():
                    reason = f"{source.path} is not a folder (key [[sources]].path)"
                    report.failed.append((source.name, reason))
                    say(f"source {source.name}: {reason}")
                    continue
                report.folders.extend(inbox_files(source.path))
                continue
            try:
                fetch_source(client, config, store, source, now, sleep, report)
            except (httpx.HTTPError, RuntimeError, InputError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                store.set_source_state(source.name, now(), "error", reason)
                report.failed.append((source.name, reason))
                say(f"source {source.name}: {reason} (skipped; will try again next poll)")
    return report
