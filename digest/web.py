"""The web face (`digest serve`): a thin WSGI app over the library, served by waitress.

Mounted at ``site_url``'s path (``Config.site_path``); everything outside it is a 404.
Under the mount:

* the site's files (``config.site``) and the feeds (``<feeds_dir name>/<name>.atom`` from
  ``config.feeds_dir``), GET and HEAD only, with strong ETags, ``Last-Modified``,
  conditional GET and gzip. Only the extensions in ``TYPES`` are ever served, every
  path segment is checked, and the resolved file must stay inside its folder and out of
  the data folder and the config file;
* the signed links of ``links.WebLinks``: ``unsubscribe`` (RFC 8058 one-click),
  ``resubscribe``, ``vote`` and ``feedback``. A GET only shows a page with one button (mail
  scanners follow links); the POST acts, through the same functions the CLI uses.

Tokens are compared in constant time (``tokens.verify``); a burst of bad tokens from one
address is answered with 429 for a while. Every request gets one access-log line in the
Combined Log Format with the value of every ``t=`` (the token) redacted.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import math
import os
import re
import signal
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes, urlencode

from jinja2 import TemplateError

from . import feedback, subscriptions, tokens
from .config import Config
from .errors import ConfigError, UsageError
from .links import DISLIKE, LIKE, WebLinks
from .models import Paper, Vote
from .render import Renderer
from .store import read_only_store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Clock = Callable[[], datetime]
Log = Callable[[str], None]

MAX_BODY = 16 * 1024  # a form post of ours is a few dozen bytes
SERVER_MAX_BODY = 4 * MAX_BODY  # waitress refuses anything larger before the app sees it
BAD_TOKEN_LIMIT = 10  # bad tokens one address may send per window ...
BAD_TOKEN_WINDOW = 60.0  # ... seconds, before its token requests get 429
THROTTLE_TABLE = 4096  # addresses remembered at most (the oldest go first)
GZIP_CACHE = 128  # compressed files kept (by content hash)
MAX_FILE = 64 * 1024 * 1024  # larger files are not served
MAX_LOGGED = 2048  # characters of a request target in the access log

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/vnd.microsoft.icon",
}
COMPRESSIBLE = frozenset({".html", ".css", ".atom", ".svg"})
TOKEN_ROUTES = ("unsubscribe", "resubscribe", "vote", "feedback")
WEB_TEMPLATES = ("web_unsubscribe.html.j2", "web_resubscribe.html.j2", "web_vote.html.j2",
                 "web_feedback.html.j2", "web_message.html.j2")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
HTML_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
)
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f-\x9f\\%]")  # on the decoded text: C0, DEL, C1
_LOG_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')  # all but printable ASCII; quotes
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# -- requests and responses -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """What the handlers read of one WSGI request."""

    environ: Mapping[str, Any]

    @property
    def method(self) -> str:
        """The request method, upper case."""
        return str(self.environ.get("REQUEST_METHOD", "GET")).upper()

    @property
    def path(self) -> str | None:
        """SCRIPT_NAME + PATH_INFO, percent-decoded once (by the server), as UTF-8 text; None
        when its bytes are not UTF-8. (WSGI hands over the bytes as a latin-1 string.)"""
        raw = str(self.environ.get("SCRIPT_NAME", "")) + str(self.environ.get("PATH_INFO", ""))
        try:
            return raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return None

    @property
    def query(self) -> str:
        """The raw query string."""
        return str(self.environ.get("QUERY_STRING", ""))

    @property
    def remote(self) -> str:
        """The client address (from X-Forwarded-For when a trusted proxy sent it)."""
        return str(self.environ.get("REMOTE_ADDR") or "-")

    def header(self, name: str) -> str:
        """A request header ("" when absent)."""
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return str(self.environ.get(key, ""))
        return str(self.environ.get(f"HTTP_{key}", ""))


@dataclass(slots=True)
class Response:
    """A whole response (every body here is small enough to build at once)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    html: bool = False  # adds the Content-Security-Policy and X-Frame-Options


class HttpError(Exception):
    """Stop handling and answer with ``status`` and a short human message."""

    def __init__(self, status: int, message: str,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def plain_page(status: int, message: str) -> Response:
    """A small fixed HTML page: it never repeats anything of the request."""
    phrase = HTTPStatus(status).phrase
    body = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{status} {phrase}</title></head><body><h1>{phrase}</h1>"
            f"<p>{message}</p></body></html>\n").encode()
    return Response(status, body, [("Content-Type", "text/html; charset=utf-8")], html=True)


NOT_FOUND = "There is nothing here."


# -- static files -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file found for a request path: its bytes, kind and modification time."""

    data: bytes
    ext: str
    mtime: float

    @property
    def digest(self) -> str:
        """The content hash the ETags are made of."""
        return hashlib.sha256(self.data).hexdigest()[:32]


def path_segments(path: str) -> list[str] | None:
    """The segments of a request path (decoded text), or None when any of them is unsafe.

    Unsafe: a backslash, a C0 or C1 control character or DEL, a ``%`` left after the one
    decoding (double encoding), an empty segment (but the last, after a trailing slash),
    ``.``, ``..`` or any other segment starting with a dot (hidden files, ``.digest-tmp``).
    """
    if not path.startswith("/") or _UNSAFE_PATH.search(path):
        return None
    segments = path[1:].split("/")
    for n, segment in enumerate(segments):
        if segment.startswith(".") or (segment == "" and n != len(segments) - 1):
            return None
    return segments


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class StaticFiles:
    """Maps checked path segments under the mount to files of the site or the feeds."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._gzip: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _target(self, segments: list[str]) -> tuple[Path, Path] | None:
        """(file or folder to look at, the folder it must stay in)."""
        names = list(segments)
        if len(names) == 2 and names[0] == self.config.feeds_dir.name \
                and names[1].endswith(".atom"):
            return self.config.feeds_dir / names[1], self.config.feeds_dir
        if names[-1] == "":
            names[-1] = "index.html"
        return self.config.site.joinpath(*names), self.config.site

    def allowed(self, target: Path, root: Path) -> str | None:
        """The real path of ``target`` when it may be served: inside the real ``root``, not
        in the data folder, not the config file (symlinks are followed first)."""
        real = os.path.realpath(target)
        if not _inside(real, os.path.realpath(root)):
            return None
        if _inside(real, os.path.realpath(self.config.data_dir)):
            return None
        if real == os.path.realpath(self.config.path):
            return None
        return real

    def find(self, segments: list[str]) -> StaticFile | str | None:
        """The file for these segments; or, for a folder named without its slash, the
        string "redirect"; or None (not found, or not to be served)."""
        found = self._target(segments)
        if found is None:
            return None
        target, root = found
        ext = target.suffix.lower()
        if ext not in TYPES:
            real = self.allowed(target, root)
            return "redirect" if real is not None and os.path.isdir(real) else None
        real = self.allowed(target, root)
        if real is None or Path(real).suffix.lower() not in TYPES:
            return None
        return self._read(real, ext)

    @staticmethod
    def _read(real: str, ext: str) -> StaticFile | None:
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE:
                return None
            return StaticFile(handle.read(MAX_FILE + 1), ext, info.st_mtime)

    def gzipped(self, file: StaticFile) -> bytes:
        """The file gzip-compressed (deterministic bytes; a few kept by content hash)."""
        key = file.digest
        with self._lock:
            if key in self._gzip:
                self._gzip.move_to_end(key)
                return self._gzip[key]
        data = gzip.compress(file.data, compresslevel=6, mtime=0)
        with self._lock:
            self._gzip[key] = data
            while len(self._gzip) > GZIP_CACHE:
                self._gzip.popitem(last=False)
        return data


def accepts_gzip(header: str) -> bool:
    """True when an Accept-Encoding value allows gzip (its q, or that of ``*``, above 0)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in header.split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            gzip_q = max(q, gzip_q or 0.0)
        elif coding == "*":
            star_q = q
    chosen = gzip_q if gzip_q is not None else star_q
    return chosen is not None and chosen > 0


def entity_tags(header: str) -> list[str]:
    """The tags of an If-None-Match value, ``W/`` dropped (the weak comparison)."""
    tags = []
    for item in header.split(","):
        tag = item.strip()
        tags.append(tag[2:] if tag.startswith("W/") else tag)
    return [t for t in tags if t]


def http_date(timestamp: float) -> str:
    """An HTTP date (IMF-fixdate) of a POSIX time, to the second."""
    return format_datetime(datetime.fromtimestamp(int(timestamp), UTC), usegmt=True)


def not_modified_since(header: str, mtime: float) -> bool:
    """True when an If-Modified-Since value is a date no older than ``mtime``."""
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return int(mtime) <= since.timestamp()


# -- the bad-token throttle -------------------------------------------------------------------
class Throttle:
    """Bad tokens per client address in a fixed window; at most ``capacity`` addresses."""

    def __init__(self, limit: int = BAD_TOKEN_LIMIT, window: float = BAD_TOKEN_WINDOW,
                 capacity: int = THROTTLE_TABLE) -> None:
        self.limit, self.window, self.capacity = limit, window, capacity
        self._table: dict[str, tuple[float, int]] = {}  # address -> (window start, bad ones)
        self._lock = threading.Lock()

    def retry_after(self, address: str, now: float) -> int:
        """Seconds until this address may try tokens again; 0 when it may now."""
        with self._lock:
            entry = self._table.get(address)
            if entry is None:
                return 0
            start, count = entry
            if now - start >= self.window:
                del self._table[address]
                return 0
            return max(1, math.ceil(start + self.window - now)) if count >= self.limit else 0

    def failed(self, address: str, now: float) -> None:
        """Count one bad token from this address."""
        with self._lock:
            entry = self._table.get(address)
            if entry is not None and now - entry[0] < self.window:
                self._table[address] = (entry[0], entry[1] + 1)
                return
            self._table.pop(address, None)
            if len(self._table) >= self.capacity:
                self._prune(now)
            self._table[address] = (now, 1)

    def _prune(self, now: float) -> None:
        """Forget the windows that ended, then the oldest, until there is room."""
        for address in [a for a, (start, _) in self._table.items()
                        if now - start >= self.window]:
            del self._table[address]
        while len(self._table) >= self.capacity:
            del self._table[next(iter(self._table))]

    def __len__(self) -> int:
        return len(self._table)


# -- forms and queries ------------------------------------------------------------------------
def parse_query(query: str) -> dict[str, str]:
    """The parameters of a query string; a malformed or repeated one is a 400."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=16, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "This link is malformed.") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise HttpError(400, "This link is malformed.")
        out[name] = value
    return out


def read_body(request: Request) -> bytes:
    """The request body, at most ``MAX_BODY`` bytes (413 beyond; at most one more is read)."""
    length = request.header("Content-Length").strip()
    try:
        declared = int(length) if length else None
    except ValueError:
        raise HttpError(400, "The request is malformed.") from None
    if declared is not None and declared > MAX_BODY:
        raise HttpError(413, "The request is too large.")
    stream = request.environ.get("wsgi.input")
    if stream is None or declared == 0:
        return b""
    data = bytes(stream.read(min(declared, MAX_BODY + 1) if declared is not None
                             else MAX_BODY + 1))
    if len(data) > MAX_BODY:
        raise HttpError(413, "The request is too large.")
    return data


def parse_form(request: Request) -> dict[str, str]:
    """The fields of a POSTed form: urlencoded or multipart/form-data (first value wins)."""
    body = read_body(request)
    content_type = request.header("Content-Type")
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded" or (media == "" and body):
        try:
            pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True,
                              max_num_fields=64, errors="replace")
        except ValueError:
            raise HttpError(400, "The form is malformed.") from None
        return dict(reversed(pairs))
    if media == "multipart/form-data":
        return _multipart(content_type, body)
    return {}


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body (files are not expected, and ignored)."""
    header = content_type.encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + header + b"\r\n\r\n" + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return {}
    fields: dict[str, str] = {}
    for part in list(message.iter_parts())[:64]:
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_param("filename",
                                                       header="content-disposition"):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            fields.setdefault(name, payload.decode("utf-8", "replace"))
    return fields


# -- the access log ---------------------------------------------------------------------------
def redact(target: str) -> str:
    """A request target with the value of every ``t`` query parameter replaced."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = []
    for piece in query.split("&"):
        name, eq, _ = piece.partition("=")
        if unquote(name.replace("+", " ")) == "t":
            piece = f"{name}=[redacted]" if eq else piece
        parts.append(piece)
    return f"{path}?{'&'.join(parts)}"


def log_text(text: str) -> str:
    """Text for one log field: quotes and backslashes escaped, and every character that is
    not printable ASCII as ``\\xhh`` (the bytes of the request line or header)."""
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in '"\\':
            return "\\" + char
        return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"
    return _LOG_UNSAFE.sub(escape, text)


def clf_time(when: datetime) -> str:
    """``01/Dec/2026:13:00:00 +0000`` (English month names whatever the locale)."""
    t = when.astimezone(UTC)
    return f"{t.day:02d}/{_MONTHS[t.month - 1]}/{t.year}:{t:%H:%M:%S} +0000"


def request_target(environ: Mapping[str, Any]) -> str:
    """The request target as the client sent it (rebuilt when the server gives none)."""
    raw = environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")),
                 safe="/", encoding="latin-1")
    query = str(environ.get("QUERY_STRING", ""))
    return f"{path}?{query}" if query else path


def access_line(environ: Mapping[str, Any], status: int, size: int, when: datetime) -> str:
    """One Combined Log Format line; tokens redacted, every quoted field escaped."""
    def quoted(value: object) -> str:
        text = str(value or "")
        return f'"{log_text(text)}"' if text else '"-"'

    host = log_text(str(environ.get("REMOTE_ADDR") or "-")).replace(" ", "_")
    target = redact(request_target(environ))
    if len(target) > MAX_LOGGED:
        target = target[:MAX_LOGGED] + "..."
    line = (f"{environ.get('REQUEST_METHOD', '-')} {target} "
            f"{environ.get('SERVER_PROTOCOL', 'HTTP/1.0')}")
    referer = environ.get("HTTP_REFERER")
    return (f"{host} - - [{clf_time(when)}] {quoted(line)} {status} {size or '-'} "
            f"{quoted(redact(str(referer)) if referer else '')} "
            f"{quoted(environ.get('HTTP_USER_AGENT'))}")


# -- the application --------------------------------------------------------------------------
class WebApp:
    """The WSGI application: routing, the handlers, security headers and the access log."""

    def __init__(self, config: Config, renderer: Renderer, clock: Clock, log: Log) -> None:
        self.config = config
        self.renderer = renderer
        self.clock = clock
        self.log = log
        # the mount as a request path decodes (not UTF-8 once unquoted: it matches nothing)
        self.mount = unquote_to_bytes(config.site_path.encode("utf-8")).decode(
            "utf-8", "surrogateescape")
        self.files = StaticFiles(config)
        self.throttle = Throttle()
        self.names = frozenset(p.name for p in config.subscribers)
        self._log_lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.respond(request)
        except Exception as exc:  # a bug or an unusable store: a plain 500, one log line
            self.say(log_text(f"digest: error: {request.method} "
                              f"{redact(request_target(environ))}: {type(exc).__name__}: {exc}"))
            response = plain_page(500, "Something went wrong on the server; try again later.")
        headers = [*response.headers, *SECURITY_HEADERS]
        if response.html:
            headers += HTML_HEADERS
        if response.status != 304:
            headers.append(("Content-Length", str(len(response.body))))
        body = b"" if request.method == "HEAD" or response.status == 304 else response.body
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        self.say(access_line(environ, response.status, len(body), self.clock()))
        return [body]

    def say(self, line: str) -> None:
        """One log line (lines of concurrent requests never mix)."""
        with self._log_lock:
            self.log(line)

    def respond(self, request: Request) -> Response:
        """Route one request under the mount."""
        path = request.path
        segments = None if path is None else path_segments(path)
        if path is None or segments is None:
            return plain_page(404, NOT_FOUND)
        if path + "/" == self.mount:
            return self.redirect(quote(self.mount, safe="/"))
        if not path.startswith(self.mount):
            return plain_page(404, NOT_FOUND)
        rel = path[len(self.mount):]
        if rel in TOKEN_ROUTES:
            return self.token_route(request, rel)
        return self.static(request, rel, segments[len(self.mount.split("/")) - 2:])

    @staticmethod
    def redirect(location: str) -> Response:
        """A 301 to a path of ours."""
        response = plain_page(301, "Moved.")
        response.headers.append(("Location", location))
        return response

    # -- static files ------------------------------------------------------------------------
    def static(self, request: Request, rel: str, segments: list[str]) -> Response:
        """A file of the site or a feed, conditional and maybe gzipped; a folder's redirect."""
        found = self.files.find(segments)
        if found is None:
            return plain_page(404, NOT_FOUND)
        if request.method not in ("GET", "HEAD"):
            return self.not_allowed("GET, HEAD")
        if isinstance(found, str):
            return self.redirect(quote(f"{self.mount}{rel}/", safe="/"))
        return self.file_response(request, found)

    def file_response(self, request: Request, file: StaticFile) -> Response:
        """200 with the file (or its gzip variant), or 304 when the client has it."""
        plain_tag = f'"{file.digest}"'
        gzip_tag = f'"{file.digest}-gzip"'
        compressible = file.ext in COMPRESSIBLE
        use_gzip = compressible and accepts_gzip(request.header("Accept-Encoding"))
        tag = gzip_tag if use_gzip else plain_tag
        headers = [("Last-Modified", http_date(file.mtime)), ("Cache-Control", "no-cache")]
        if compressible:
            headers.append(("Vary", "Accept-Encoding"))
        match = request.header("If-None-Match")
        if match:
            known = {plain_tag, gzip_tag} if compressible else {plain_tag}
            hit = next((t for t in entity_tags(match) if t == "*" or t in known), None)
            if hit is not None:
                return Response(304, b"", [("ETag", tag if hit == "*" else hit), *headers])
        elif not_modified_since(request.header("If-Modified-Since"), file.mtime):
            return Response(304, b"", [("ETag", tag), *headers])
        body = self.files.gzipped(file) if use_gzip else file.data
        headers = [("Content-Type", TYPES[file.ext]), ("ETag", tag), *headers]
        if use_gzip:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, body, headers, html=file.ext in (".html", ".svg"))

    @staticmethod
    def not_allowed(allow: str) -> Response:
        """405 naming the methods that are."""
        response = plain_page(405, "This method is not allowed here.")
        response.headers.append(("Allow", allow))
        return response

    # -- the signed links --------------------------------------------------------------------
    def token_route(self, request: Request, route: str) -> Response:
        """The pages of the signed links: checks in order, then the route's handler."""
        if request.method not in ("GET", "HEAD", "POST"):
            return self.not_allowed("GET, HEAD, POST")
        try:
            wait = self.throttle.retry_after(request.remote, self.clock().timestamp())
            if wait:
                raise HttpError(429, f"Too many invalid links from your address; try again "
                                f"in {wait} seconds.", [("Retry-After", str(wait))])
            secret = tokens.load_secret(self.config.data_dir, create=False)
            if secret is None:
                raise HttpError(400, "This link is not valid: no tokens have been issued yet.")
            query = parse_query(request.query)
            handler = {"unsubscribe": self.unsubscribe, "resubscribe": self.resubscribe,
                       "vote": self.vote, "feedback": self.feedback}[route]
            response = handler(request, query, secret)
        except HttpError as err:
            response = self.message(err.status, HTTPStatus(err.status).phrase, err.message)
            response.headers += err.headers
        response.headers.append(("Cache-Control", "no-store"))
        return response

    def check(self, request: Request, ok: bool, name: str) -> None:
        """400 (and one more bad token counted) unless the token is right for a subscriber
        who is still in the config."""
        if not ok or name not in self.names:
            self.throttle.failed(request.remote, self.clock().timestamp())
            raise HttpError(400, "This link is not valid. It may be from an old e-mail, or "
                            "cut short; use the link in your latest digest.")

    def here(self, route: str, **query: str) -> str:
        """The absolute path + query of one of our pages (what its form posts to)."""
        return f"{self.config.site_path}{route}?{urlencode(query)}"

    def links(self, secret: bytes, name: str) -> WebLinks:
        """The subscriber's signed links, under the mount (path and query only)."""
        return WebLinks(self.config.site_path, secret, name)

    def page(self, template: str, page_title: str, **context: Any) -> Response:
        """200 with one of the web templates."""
        html = self.renderer.page(template, {
            "root": self.config.site_path, "title": f"{page_title} · {self.config.title}",
            "feed_url": None, "digest_title": self.config.title, **context})
        return Response(200, html.encode("utf-8"),
                        [("Content-Type", "text/html; charset=utf-8")], html=True)

    def message(self, status: int, heading: str, text: str) -> Response:
        """A short page saying what went wrong (``web_message.html.j2``)."""
        response = self.page("web_message.html.j2", heading, heading=heading, message=text)
        response.status = status
        return response

    def unsubscribe(self, request: Request, query: dict[str, str], secret: bytes) -> Response:
        """GET: the one-button page; POST with ``List-Unsubscribe=One-Click``: no more mail."""
        name, token = query.get("u", ""), query.get("t", "")
        self.check(request, tokens.verify(secret, tokens.UNSUBSCRIBE, name, token), name)
        action = self.here("unsubscribe", u=name, t=token)
        links = self.links(secret, name)
        if request.method != "POST":
            return self.page("web_unsubscribe.html.j2", "Unsubscribe", name=name, done=False,
                             action=action, resubscribe=links.resubscribe)
        if parse_form(request).get("List-Unsubscribe") != "One-Click":
            raise HttpError(400, "To unsubscribe, use the button on this link's page.")
        if not subscriptions.is_unsubscribed(self.config, name):  # a repeat keeps the time
            subscriptions.set_mail(self.config, [name], stop=True, now=self.clock())
        return self.page("web_unsubscribe.html.j2", "Unsubscribed", name=name, done=True,
                         action=action, resubscribe=links.resubscribe)

    def resubscribe(self, request: Request, query: dict[str, str], secret: bytes) -> Response:
        """GET: the one-button page; POST: e-mail again from the next digest."""
        name, token = query.get("u", ""), query.get("t", "")
        self.check(request, tokens.verify(secret, tokens.UNSUBSCRIBE, name, token), name)
        links = self.links(secret, name)
        done = request.method == "POST"
        if done:
            read_body(request)
            if subscriptions.is_unsubscribed(self.config, name):
                subscriptions.set_mail(self.config, [name], stop=False, now=self.clock())
        return self.page("web_resubscribe.html.j2", "Subscribed" if done else "Subscribe again",
                         name=name, done=done, action=links.resubscribe,
                         unsubscribe=links.unsubscribe,
                         has_email=bool(self.config.subscriber(name).email))

    def vote(self, request: Request, query: dict[str, str], secret: bytes) -> Response:
        """GET: the paper and one button; POST: the 👍/👎 recorded (replacing the other)."""
        name, key, token = query.get("u", ""), query.get("p", ""), query.get("t", "")
        direction = query.get("v", "")
        like = direction == LIKE
        public = query.get("s") == "1"  # a link of a public site page: signed apart
        valid = direction in (LIKE, DISLIKE) and tokens.verify(
            secret, tokens.vote_purpose(like, public), tokens.vote_subject(name, key), token)
        self.check(request, valid, name)
        paper = self.paper(key)
        if paper is None:
            raise HttpError(404, "This paper is not in the digest's store (any more).")
        done = request.method == "POST"
        if done:
            read_body(request)
            try:
                feedback.record(self.config, name, likes=[key] if like else [],
                                dislikes=[] if like else [key], now=self.clock())
            except UsageError:  # the paper went between the look-up and the vote
                raise HttpError(404, "This paper is not in the digest's store.") from None
        return self.page("web_vote.html.j2", "Vote", name=name, paper=paper, like=like,
                         done=done, action=self.here("vote", u=name, p=key, v=direction,
                                                     **({"s": "1"} if public else {}), t=token),
                         # whoever can see a site page can use its links: no vote history
                         feedback=None if public else self.links(secret, name).feedback)

    def feedback(self, request: Request, query: dict[str, str], secret: bytes) -> Response:
        """GET: the reader's votes, newest first, each with undo; POST ``undo=KEY``."""
        name, token = query.get("u", ""), query.get("t", "")
        self.check(request, tokens.verify(secret, tokens.FEEDBACK, name, token), name)
        undone: Vote | None = None
        missing = False
        if request.method == "POST":
            key = parse_form(request).get("undo")
            if not key:
                raise HttpError(400, "Nothing to undo: use an undo button of this page.")
            before = feedback.votes(self.config, name)
            if feedback.undo(self.config, name, [key]):
                undone = next((v for v in before if v.paper.key == key), None)
            else:
                missing = True
        return self.page("web_feedback.html.j2", "Your votes", name=name,
                         votes=feedback.votes(self.config, name), undone=undone,
                         missing=missing, action=self.here("feedback", u=name, t=token))

    def paper(self, key: str) -> Paper | None:
        """The stored paper a key names, or None (also with no store yet)."""
        store = read_only_store(self.config)
        if store is None:
            return None
        try:
            return store.paper(key)
        finally:
            store.close()


def make_app(config: Config, *, renderer: Renderer | None = None, clock: Clock | None = None,
             log: Log | None = None) -> WSGIApplication:
    """The WSGI application of ``digest serve`` (``log`` gets the access-log lines)."""
    renderer = renderer or Renderer(config.templates)
    for name in WEB_TEMPLATES:  # a broken template is an error at start, not per request
        try:
            renderer.html.get_template(name)
        except TemplateError as exc:
            raise ConfigError(name, [f"template error: {exc} (key [digest].templates)"]) \
                from None
    return WebApp(config, renderer, clock or (lambda: datetime.now(UTC)),
                  log or (lambda line: None))


# -- the server -------------------------------------------------------------------------------
def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(config: Config, *, host: str, port: int, threads: int, trusted_proxy: str | None,
          log: Log) -> None:
    """Serve until SIGTERM or SIGINT; log the address first (port 0: a free port)."""
    from waitress.server import create_server

    app = make_app(config, log=log)
    options: dict[str, Any] = {
        "host": host, "port": port, "threads": threads,
        "max_request_body_size": SERVER_MAX_BODY, "clear_untrusted_proxy_headers": True,
        "ident": "digest"}
    if trusted_proxy:
        options.update(trusted_proxy=trusted_proxy,
                       trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"})
    try:
        server = create_server(app, **options)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listening = getattr(server, "effective_listen", None)
    effective = getattr(server, "effective_port", None) or (listening[0][1] if listening
                                                            else port)
    for warning in _warnings(config):
        log(f"digest: warning: {warning}")
    if not trusted_proxy and _loopback(host):
        log("digest: note: behind a reverse proxy every client has the proxy's address (for "
            "the bad-token limit and the log); pass --trusted-proxy ADDR")
    log(f"digest: serving {config.site} at http://{_url_host(host)}:{effective}"
        f"{config.site_path}")
    _run_until_signal(server.run, server.close)
    log("digest: stopped")


def _loopback(host: str) -> bool:
    """Whether the server listens on a loopback address only (as behind a reverse proxy)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warnings(config: Config) -> list[str]:
    """What an operator should know before the first request."""
    out = []
    if not (config.site / "index.html").is_file():
        out.append(f"{config.site / 'index.html'} does not exist yet; run `digest run` or "
                   "`digest build-site` first")
    if _inside(os.path.realpath(config.feeds_dir), os.path.realpath(config.data_dir)):
        out.append(f"feeds_dir {config.feeds_dir} is inside data_dir, which is never served: "
                   "the feeds answer 404; give them a folder of their own")
    return out


def _run_until_signal(run: Callable[[], None], close: Callable[[], None]) -> None:
    """Run the server loop; SIGTERM and SIGINT end it (waitress stops on KeyboardInterrupt)."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main \
        else {}
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        close()


__all__ = ["make_app", "serve"]
