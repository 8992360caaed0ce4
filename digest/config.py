"""Read and check ``config.toml`` before anything runs; report every problem at once.

Paths are relative to the config file. Unknown keys are errors (a typo in a keyword
table would silently change ranking) and come with the closest valid key.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cadence import parse_cadence
from .errors import ConfigError
from .models import Keyword, Profile
from .rank import keyword_problem

DEFAULT_CONFIG = "config.toml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\".]+(\.[^@\s<>\".]+)*$")
# Upper bounds of the numbers: far above any real use, and within what every consumer
# (SQLite's 64-bit integers, floats, socket timeouts, timers) can hold.
MAX_FEED_SIZE = 10_000
MAX_ENRICH_BUDGET = 600  # seconds: enrichment never holds a run up longer
MAX_ALSO_NEW = 10_000
MAX_ITEMS = 10_000
MAX_RESULTS = 2_000
MAX_PER_MINUTE = 10_000
MAX_WEIGHT = 1_000
MAX_MIN_SCORE = 1_000_000
MAX_TIMEOUT = 3_600  # seconds
MAX_POLL_INTERVAL = 7 * 24 * 3600  # seconds: a week
MAX_DEPTH = 8  # arrays and tables inside a value; digest's own settings nest at most 2
MAX_DISPLAY_NAME = 200  # characters of [smtp].from's display name
MAX_INTEREST = 2_000  # characters of a subscriber's ``interest`` (after collapsing spaces)
# Control characters: none in any value; tab and line breaks are fine in multi-line text.
_CONTROL = re.compile("[\x00-\x1f\x7f\ufffe\uffff]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_MULTI_LINE = {("digest", "intro"), ("subscribers", "keywords"), ("subscribers", "exclude"),
               ("subscribers", "interest")}


def address_problem(value: str) -> str | None:
    """Why ``value`` cannot be an SMTP address here, or None when it can."""
    if not _EMAIL.match(value):
        return f"{value!r} is not an e-mail address"
    if not value.isascii():
        return f"{value!r} has non-ASCII characters, which digest cannot send to yet"
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        return f"{value!r} is not a valid e-mail address ({exc})"
    if parsed.addr_spec != value:
        return f"{value!r} is not a plain e-mail address (did you mean {parsed.addr_spec!r}?)"
    return None


def parse_sender(value: str) -> tuple[str | None, str]:
    """``[smtp].from``: ``addr@host`` or ``Display Name <addr@host>`` -> (name, address).

    Raises ValueError with the reason when the value is neither.
    """
    if "<" not in value and "(" not in value and '"' not in value:
        if (problem := address_problem(value)) is not None:
            raise ValueError(problem)
        return None, value
    try:
        header = policy.default.header_factory("from", value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(f"{value!r} is not an e-mail address ({exc})") from None
    groups = header.groups
    if header.defects or len(groups) != 1 or groups[0].display_name is not None \
            or len(groups[0].addresses) != 1:
        raise ValueError(f"{value!r} is not one e-mail address, with or without a name, like "
                         "\"Papers Digest <digest@example.org>\"")
    found: Address = groups[0].addresses[0]
    if (problem := address_problem(found.addr_spec)) is not None:
        raise ValueError(problem)
    name = " ".join(found.display_name.split()) or None
    if name is not None and len(name) > MAX_DISPLAY_NAME:
        raise ValueError(f"the display name has {len(name)} characters; at most "
                         f"{MAX_DISPLAY_NAME}")
    return name, found.addr_spec


class Secret:
    """A secret read from the environment; it never shows in a repr, a log or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """How to reach the SMTP server; the password comes from the environment only."""

    host: str
    port: int
    security: str  # "starttls", "ssl" or "none"
    sender: str  # the bare address: the envelope sender and the Message-ID's domain
    username: str | None = None
    password_env: str | None = None
    reply_to: str | None = None
    max_per_minute: int = 0  # 0: no limit
    timeout: float = 30.0
    ca_file: Path | None = None
    unsubscribe_mailto: str | None = None
    config_path: str = ""
    from_name: str | None = None  # the From display name (None: the digest's title)

    def password(self) -> Secret | None:
        """The password from $password_env (ConfigError when the variable is not set)."""
        if not self.password_env:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(self.config_path, [
                f"[smtp].password_env: the environment variable {self.password_env} is not "
                "set; export it (the password never goes in the config file)"])
        return Secret(value)


@dataclass(frozen=True, slots=True)
class RankingConfig:
    """``[ranking]``: whether the semantic signal is used, and which embedding model."""

    semantic: bool = True  # use the semantic signal when the optional extra is installed
    model: Path | None = None  # a folder with an ONNX sentence-embedding model + tokenizer.json


@dataclass(frozen=True, slots=True)
class Config:
    """The whole checked configuration."""

    path: Path
    title: str
    inbox: Path
    data_dir: Path
    feeds_dir: Path
    site_url: str | None
    feed_size: int
    also_new: int
    templates: Path | None
    timezone: str
    subscribers: tuple[Profile, ...]
    intro: str = ""
    smtp: SmtpConfig | None = None
    sources: tuple[SourceConfig, ...] = ()
    poll_interval: float = 600.0
    ranking: RankingConfig = RankingConfig()
    site_dir: Path | None = None  # the browsable site (index, archives, issue pages)
    store_url: str | None = None  # PostgreSQL ([store] url, $DIGEST_STORE_URL); None: SQLite
    enrich: bool = True  # look up links and names of papers read without them
    enrich_budget: int = 30  # seconds a run may spend on that at most

    @property
    def site(self) -> Path:
        """The site folder (``[digest].site_dir``; ``site`` beside the config by default)."""
        return self.site_dir or self.path.parent / "site"

    @property
    def site_path(self) -> str:
        """The URL path the site is mounted at: ``site_url``'s path, ``/`` without one."""
        return (urlsplit(self.site_url).path or "/") if self.site_url else "/"

    @property
    def store_path(self) -> Path:
        """The SQLite store file."""
        return self.data_dir / "digest.sqlite3"

    @property
    def store_name(self) -> str:
        """Where the store is, as messages name it (a PostgreSQL URL has no password)."""
        return self.store_url.split("@")[-1] if self.store_url else str(self.store_path)

    def has_store(self) -> bool:
        """A store exists (PostgreSQL: always; it is made on first use)."""
        return bool(self.store_url) or self.store_path.is_file()

    @property
    def digests_dir(self) -> Path:
        """Where rendered digests go, one folder per subscriber."""
        return self.data_dir / "digests"

    def feed_url(self, name: str) -> str | None:
        """The public URL of a subscriber's feed (its rel="self")."""
        if not self.site_url:
            return None
        return f"{self.site_url}{self.feeds_dir.name}/{name}.atom"

    def subscriber(self, name: str) -> Profile:
        """The subscriber called ``name`` (ConfigError naming the valid ones if absent)."""
        for p in self.subscribers:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in self.subscribers) or "none configured"
        raise ConfigError(str(self.path), [f"no subscriber named {name!r} (have: {valid})"])


class _Checker:
    """Collects problems as ``[table].key: message`` with the line where it can find one."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.split("\n")
        self.problems: list[str] = []

    def line_of(self, table: str, index: int | None, key: str | None) -> int | None:
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$") if table else None
        start, seen = 0, -1
        if header is not None:
            for n, line in enumerate(self.lines):
                if header.match(line):
                    seen += 1
                    if index is None or seen == index:
                        start = n
                        break
            else:
                return None
        if key is None:
            return start + 1 if header is not None else None
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for n in range(start, len(self.lines)):
            if n > start and re.match(r"^\s*\[", self.lines[n]):
                break
            if pattern.match(self.lines[n]):
                return n + 1
        return None

    def add(self, table: str, index: int | None, key: str | None, message: str,
            suffix: str = "") -> None:
        where = f"[{table}]" + (f"[{index}]" if index is not None else "") if table else ""
        dotted = _printable(f"{where}.{key}{suffix}" if key and where else (key or where))
        line = self.line_of(table, index, key)
        self.problems.append(f"{str(line) + ': ' if line else ''}{dotted}: {message}")

    def unknown(self, table: str, index: int | None, got: dict[str, Any],
                valid: tuple[str, ...]) -> None:
        for key in got:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; valid keys: {', '.join(valid)}"
                self.add(table, index, key, f"unknown key{hint}")


def _printable(text: str) -> str:
    """``text`` as is, or escaped when it holds characters that would garble the line."""
    return text if text.isprintable() else repr(text)[1:-1]


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _in_range(value: float, low: float, high: float, *, above: bool = False) -> bool:
    """``low <= value <= high`` (``low < value`` with ``above``): exact for an integer of
    any size (never converted to a float), False for NaN."""
    return bool((value > low if above else value >= low) and value <= high)


def _integer(check: _Checker, table: str, index: int | None, data: dict[str, Any], key: str,
             default: int, low: int, high: int, note: str = "") -> int:
    """An integer key, range-checked (the default when it is missing or wrong)."""
    value: int = _typed(check, table, index, data, key, int, default, "an integer")
    if not _in_range(value, low, high):
        check.add(table, index, key, f"must be at least {low} and at most {high}{note}, got "
                  f"{_describe(value)}")
        return default
    return value


Where = tuple[str, int | None, str]


def _values(raw: dict[str, Any]) -> Iterator[tuple[Where, Any]]:
    """Every key's value with where it is (table, index in an array of tables, key)."""
    for top, value in raw.items():
        if isinstance(value, dict):
            for key, item in value.items():
                yield (top, None, key), item
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, table in enumerate(value):
                for key, item in table.items():
                    yield (top, index, key), item
        else:
            yield ("", None, top), value


def _value_problem(where: Where, value: Any) -> tuple[str, str] | None:
    """(suffix, message) for the first unusable part of one value: nested too deeply or a
    control character. Iterative, so no depth of nesting can exhaust the stack."""
    text_ok = _CONTROL_IN_TEXT if (where[0], where[2]) in _MULTI_LINE else _CONTROL
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, suffix = stack.pop()
        if depth > MAX_DEPTH:
            return "", (f"nests arrays or tables more than {MAX_DEPTH} levels deep (no "
                        "setting of digest nests like that)")
        if isinstance(item, str) and (bad := text_ok.search(item)):
            char = ord(bad.group())
            return suffix, (f"contains the control character U+{char:04X}"
                            + (" (NUL)" if char == 0 else "") + "; remove it")
        if isinstance(item, list):
            stack += [(v, depth + 1, f"{suffix}[{n}]") for n, v in reversed(list(enumerate(item)))]
        elif isinstance(item, dict):
            stack += [(v, depth + 1, f"{suffix}.{k}") for k, v in reversed(list(item.items()))]
    return None


def _check_values(path: Path, text: str, raw: dict[str, Any]) -> None:
    """Stop at once on values nothing else can look at safely (too deep, control characters)."""
    check = _Checker(path, text)
    for (table, index, key), value in _values(raw):
        if (problem := _value_problem((table, index, key), value)) is not None:
            check.add(table, index, key, problem[1], problem[0])
    if check.problems:
        raise ConfigError(str(path), check.problems)


def _typed(check: _Checker, table: str, index: int | None, data: dict[str, Any], key: str,
           kind: type | tuple[type, ...], default: Any, what: str) -> Any:
    if key not in data:
        return default
    value = data[key]
    if isinstance(value, bool) and kind is not bool and bool not in (
            kind if isinstance(kind, tuple) else (kind,)):
        check.add(table, index, key, f"expected {what}, got {_describe(value)}")
        return default
    if not isinstance(value, kind):
        check.add(table, index, key, f"expected {what}, got {_describe(value)}")
        return default
    return value


def _keywords(check: _Checker, index: int, data: dict[str, Any], key: str) -> tuple[Keyword, ...]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        check.add("subscribers", index, key, f"expected a list of keywords, got {_describe(raw)}")
        return ()
    out: list[Keyword] = []
    for n, item in enumerate(raw):
        suffix = f"[{n}]"
        if isinstance(item, str):
            term, weight = item, 1.0
        elif isinstance(item, dict):
            extra = [k for k in item if k not in ("term", "weight")]
            if extra:
                close = difflib.get_close_matches(extra[0], ("term", "weight"), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                check.add("subscribers", index, key, f"unknown key {extra[0]!r}{hint}", suffix)
                continue
            term_value, weight = item.get("term"), item.get("weight", 1.0)
            if not isinstance(term_value, str):
                check.add("subscribers", index, key, "a keyword table needs term = \"...\"",
                          suffix)
                continue
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not \
                    _in_range(weight, 0, MAX_WEIGHT, above=True):
                check.add("subscribers", index, key,
                          f"weight must be a number above 0 and at most {MAX_WEIGHT}, got "
                          f"{_describe(weight)} (put unwanted words in exclude)", suffix)
                continue
            term = term_value
        else:
            check.add("subscribers", index, key, "expected a string or a table like "
                      f"{{ term = \"...\", weight = 2 }}, got {_describe(item)}", suffix)
            continue
        if not re.search(r"\w", term):
            check.add("subscribers", index, key, f"keyword {term!r} has no letters or digits",
                      suffix)
            continue
        problem = keyword_problem(term)
        if problem:
            check.add("subscribers", index, key, problem, suffix)
            continue
        out.append(Keyword(" ".join(term.split()), float(weight)))
    return tuple(out)


_DIGEST_KEYS = ("title", "inbox", "data_dir", "feeds_dir", "site_dir", "site_url", "feed_size",
                "also_new", "templates", "timezone", "intro", "poll_interval", "enrich",
                "enrich_budget")
_SUBSCRIBER_KEYS = ("name", "email", "keywords", "exclude", "min_score", "max_items", "feed",
                    "mail", "cadence", "timezone", "interest")
_SOURCE_KEYS = ("name", "type", "url", "date", "query", "max_results", "path")
SOURCE_TYPES = ("hf-daily", "hf-page", "arxiv", "feed", "folder")
DEFAULT_SOURCE_URLS = {
    "hf-daily": "https://huggingface.co/api/daily_papers",
    "hf-page": "https://huggingface.co/papers",
    "arxiv": "https://export.arxiv.org/api/query",
}
_SMTP_KEYS = ("host", "port", "security", "username", "password_env", "from", "reply_to",
              "max_per_minute", "timeout", "ca_file", "unsubscribe_mailto")
_RANKING_KEYS = ("semantic", "model")
_TOP_KEYS = ("digest", "subscribers", "smtp", "sources", "ranking", "store")
_STORE_KEYS = ("url",)
STORE_URL_ENV = "DIGEST_STORE_URL"  # a PostgreSQL URL; wins over [store] url
_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


def _subscriber(check: _Checker, index: int, data: Any, names: set[str]) -> Profile | None:
    if not isinstance(data, dict):
        check.add("subscribers", index, None, "expected a [[subscribers]] table")
        return None
    check.unknown("subscribers", index, data, _SUBSCRIBER_KEYS)
    name = _typed(check, "subscribers", index, data, "name", str, None, "a string")
    if name is None:
        if "name" not in data:
            check.add("subscribers", index, "name", "missing: every subscriber needs a name")
        return None
    if not _NAME.match(name):
        check.add("subscribers", index, "name", f"{name!r} is not a valid name: use lower-case "
                  "letters, digits, '-' and '_' (it names files and feeds)")
        return None
    if name in names:
        check.add("subscribers", index, "name", f"{name!r} is used by two subscribers")
    names.add(name)
    email = _typed(check, "subscribers", index, data, "email", str, None, "an e-mail address")
    if email is not None and (problem := address_problem(email)):
        check.add("subscribers", index, "email", problem)
    min_score = _typed(check, "subscribers", index, data, "min_score", (int, float), 0.0,
                       "a number")
    if not _in_range(min_score, 0, MAX_MIN_SCORE):
        check.add("subscribers", index, "min_score", f"must be a number of 0 or more, at most "
                  f"{MAX_MIN_SCORE}, got {_describe(min_score)}")
        min_score = 0.0
    max_items = _integer(check, "subscribers", index, data, "max_items", 20, 1, MAX_ITEMS)
    return Profile(
        name=name, email=email, keywords=_keywords(check, index, data, "keywords"),
        exclude=_keywords(check, index, data, "exclude"), min_score=float(min_score),
        max_items=max_items,
        feed=_typed(check, "subscribers", index, data, "feed", bool, True, "true or false"),
        mail=_typed(check, "subscribers", index, data, "mail", bool, True, "true or false"),
        cadence=_cadence(check, index, data), timezone=_zone(check, "subscribers", index, data),
        interest=_interest(check, index, data),
    )


def _interest(check: _Checker, index: int, data: dict[str, Any]) -> str:
    """A sentence or two about what the reader wants; white space collapsed, bounded."""
    text: str = _typed(check, "subscribers", index, data, "interest", str, "",
                       "a string (a sentence about what you want to read)")
    text = " ".join(text.split())
    if len(text) > MAX_INTEREST:
        check.add("subscribers", index, "interest", f"at most {MAX_INTEREST} characters, got "
                  f"{len(text)}; say it in a few sentences (keywords carry the details)")
        return ""
    return text


def _cadence(check: _Checker, index: int, data: dict[str, Any]) -> str:
    text: str = _typed(check, "subscribers", index, data, "cadence", str, "immediate",
                       "a cadence string")
    try:
        return str(parse_cadence(text))
    except ValueError as exc:
        check.add("subscribers", index, "cadence", str(exc))
        return "immediate"


def _zone(check: _Checker, table: str, index: int | None, data: dict[str, Any]) -> str | None:
    name: str | None = _typed(check, table, index, data, "timezone", str, None,
                              "an IANA zone name")
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        check.add(table, index, "timezone",
                  f"unknown time zone {name!r} (use a name like 'Europe/Berlin')")
        return None
    return name


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """A place the daemon fetches papers from."""

    name: str
    type: str
    url: str | None = None
    date: str | None = None  # hf-daily: a YYYY-MM-DD listing instead of today's
    query: str | None = None  # arxiv: the search_query
    max_results: int = 100
    path: Path | None = None  # folder


def _source(base: Path, check: _Checker, index: int, data: Any,
            names: set[str]) -> SourceConfig | None:
    if not isinstance(data, dict):
        check.add("sources", index, None, "expected a [[sources]] table")
        return None
    check.unknown("sources", index, data, _SOURCE_KEYS)
    name = _typed(check, "sources", index, data, "name", str, None, "a string")
    kind = _typed(check, "sources", index, data, "type", str, None, "a source type")
    for key, value in (("name", name), ("type", kind)):
        if value is None and key not in data:
            check.add("sources", index, key, "missing: every source needs one")
    if name is not None and (not _NAME.match(name) or name in names):
        check.add("sources", index, "name", f"{name!r}: use a unique lower-case name "
                  "(letters, digits, '-', '_'); it names the files fetched")
    if kind is not None and kind not in SOURCE_TYPES:
        close = difflib.get_close_matches(kind, SOURCE_TYPES, n=1)
        check.add("sources", index, "type", f"{kind!r} is not one of {', '.join(SOURCE_TYPES)}"
                  + (f"; did you mean {close[0]!r}?" if close else ""))
        kind = None
    url = _typed(check, "sources", index, data, "url", str, None, "a URL")
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        check.add("sources", index, "url", f"{url!r} is not an http(s) URL")
    if kind == "feed" and url is None:
        check.add("sources", index, "url", "missing: a feed source needs the feed's URL")
    if kind == "arxiv" and "query" not in data:
        check.add("sources", index, "query", "missing: an arxiv source needs a search query, "
                  "e.g. \"cat:cs.CV AND abs:CLIP\"")
    path = None
    if kind == "folder":
        if "path" not in data:
            check.add("sources", index, "path", "missing: a folder source needs a path")
        else:
            path = _path(base, check, data, "path", "", table="sources")
    max_results = _integer(check, "sources", index, data, "max_results", 100, 1, MAX_RESULTS)
    date_text = _typed(check, "sources", index, data, "date", str, None, "a YYYY-MM-DD date")
    if date_text is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date_text):
        check.add("sources", index, "date", f"{date_text!r} is not a YYYY-MM-DD date")
    if name is None or kind is None:
        return None
    names.add(name)
    return SourceConfig(name, kind, url or DEFAULT_SOURCE_URLS.get(kind), date_text,
                        _typed(check, "sources", index, data, "query", str, None, "a string"),
                        max_results, path)


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hours?)?\s*$", re.I)


def _interval(check: _Checker, data: dict[str, Any]) -> float:
    value = data.get("poll_interval", "10m")
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (m := _INTERVAL.match(value)):
        unit = (m[2] or "s").lower()[0]
        seconds = float(m[1]) * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds is None or not _in_range(seconds, 1, MAX_POLL_INTERVAL):
        check.add("digest", None, "poll_interval",
                  f"expected seconds (1 to {MAX_POLL_INTERVAL}, a week) or a duration like "
                  f"\"10m\", got {_describe(value)}")
        return 600.0
    return float(seconds)


def _smtp(base: Path, path: Path, check: _Checker, data: Any) -> SmtpConfig | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        check.add("", None, "smtp", "expected an [smtp] table")
        return None
    check.unknown("smtp", None, {k: v for k, v in data.items() if k != "password"}, _SMTP_KEYS)

    def text(key: str, what: str = "a string") -> str | None:
        value: str | None = _typed(check, "smtp", None, data, key, str, None, what)
        return value

    host = text("host", "a host name")
    sender = text("from", "an e-mail address")
    for key, value in (("host", host), ("from", sender)):
        if value is None and key not in data:
            check.add("smtp", None, key, "missing: e-mail delivery needs it")
    from_name = None
    if sender is not None:
        try:
            from_name, sender = parse_sender(sender)
        except ValueError as exc:
            check.add("smtp", None, "from", str(exc))
            sender = None
    for key in ("reply_to", "unsubscribe_mailto"):
        value = text(key, "an e-mail address")
        if value is not None and (problem := address_problem(value)):
            check.add("smtp", None, key, problem)
    security = text("security") or "starttls"
    if security not in _DEFAULT_PORTS:
        close = difflib.get_close_matches(security, tuple(_DEFAULT_PORTS), n=1)
        check.add("smtp", None, "security", f"must be starttls, ssl or none, got {security!r}"
                  + (f"; did you mean {close[0]!r}?" if close else ""))
        security = "starttls"
    port = _integer(check, "smtp", None, data, "port", _DEFAULT_PORTS[security], 1, 65535)
    rate = _integer(check, "smtp", None, data, "max_per_minute", 0, 0, MAX_PER_MINUTE,
                    " (0: no limit)")
    timeout = _typed(check, "smtp", None, data, "timeout", (int, float), 30.0, "a number")
    if not _in_range(timeout, 0, MAX_TIMEOUT, above=True):
        check.add("smtp", None, "timeout", f"must be a number of seconds above 0 and at most "
                  f"{MAX_TIMEOUT}, got {_describe(timeout)}")
        timeout = 30.0
    if "password" in data:
        check.add("smtp", None, "password", "never put the password in the config file: "
                  "set password_env = \"NAME\" and export NAME in the environment")
    password_env = text("password_env", "the name of an environment variable")
    username = text("username")
    if password_env and not username:
        check.add("smtp", None, "username", "missing: a password needs a user name")
    if username and not password_env:
        check.add("smtp", None, "password_env", "missing: a user name needs a password; name "
                  "the environment variable that holds it")
    ca_file = None
    if "ca_file" in data:
        ca_file = _path(base, check, data, "ca_file", "", table="smtp")
        try:
            ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            check.add("smtp", None, "ca_file", f"{ca_file} is not a readable PEM file of CA "
                      f"certificates ({exc})")
    if host is None or sender is None:
        return None
    return SmtpConfig(
        host=host, port=port, security=security, sender=sender, username=username,
        password_env=password_env, reply_to=text("reply_to"), max_per_minute=rate,
        timeout=float(timeout), ca_file=ca_file,
        unsubscribe_mailto=text("unsubscribe_mailto"), config_path=str(path),
        from_name=from_name)


def _store_url(check: _Checker, data: Any) -> str | None:
    """``$DIGEST_STORE_URL``, else ``[store] url``: a PostgreSQL URL without a password
    (libpq reads it from ``PGPASSWORD`` or ``~/.pgpass``); None: SQLite in data_dir."""
    if data is not None and not isinstance(data, dict):
        check.add("", None, "store", "expected a [store] table")
        data = None
    if data is not None:
        check.unknown("store", None, data, _STORE_KEYS)
    from_env = os.environ.get(STORE_URL_ENV, "").strip()
    url = from_env or (_typed(check, "store", None, data, "url", str, None, "a URL")
                       if data is not None else None)
    if url is None:
        return None
    where = f"${STORE_URL_ENV}" if from_env else "[store].url"
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        check.add("store", None, "url", f"{where}: {url.split('@')[-1]!r} is not a "
                  "postgresql:// URL (leave it out to keep the SQLite store in data_dir)")
        return None
    if parts.password is not None or re.search(r"(?i)(?:^|&)password=", parts.query):
        check.add("store", None, "url", f"{where} holds a password: take it out and put it "
                  "in PGPASSWORD or ~/.pgpass (passwords never go in the config)")
        return None
    return url


def _ranking(base: Path, check: _Checker, data: Any) -> RankingConfig:
    if data is None:
        return RankingConfig()
    if not isinstance(data, dict):
        check.add("", None, "ranking", "expected a [ranking] table")
        return RankingConfig()
    check.unknown("ranking", None, data, _RANKING_KEYS)
    semantic = _typed(check, "ranking", None, data, "semantic", bool, True, "true or false")
    model = None
    if isinstance(data.get("model"), str) and not data["model"].strip():
        check.add("ranking", None, "model", "is empty; remove the key to use the default model")
    elif "model" in data:
        found = _path(base, check, data, "model", "", table="ranking")  # a non-string: reported
        if isinstance(data["model"], str) and not found.is_dir():
            check.add("ranking", None, "model", f"{found} is not a folder; point it at a folder "
                      "holding an ONNX sentence-embedding model and its tokenizer.json")
        elif isinstance(data["model"], str):
            model = found
    return RankingConfig(semantic=semantic, model=model)


def _path(base: Path, check: _Checker, data: dict[str, Any], key: str, default: str,
          table: str = "digest") -> Path:
    value: str = _typed(check, table, None, data, key, str, default, "a path (string)")
    try:
        return (base / os.path.expanduser(value)).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL, a symbolic link loop, ...
        check.add(table, None, key, f"{_describe(value)} cannot be used as a path ({exc})")
        return base / default


def _sources(base: Path, check: _Checker, raw: Any) -> tuple[SourceConfig, ...]:
    if not isinstance(raw, list):
        check.add("", None, "sources", "expected [[sources]] tables")
        return ()
    names: set[str] = set()
    found = [_source(base, check, i, s, names) for i, s in enumerate(raw)]
    return tuple(s for s in found if s is not None)


def _load_toml(path: Path, text: str) -> dict[str, Any]:
    """The parsed TOML, or a ConfigError for text tomllib refuses or cannot get through."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        where = f"{found.group(1)}: " if found else ""
        raise ConfigError(str(path), [f"{where}invalid TOML: {exc}"]) from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        where = _first_line(text, lambda line: line.count("[") + line.count("{") > 32)
        raise ConfigError(str(path), [f"{where}invalid TOML: arrays or tables nested too "
                                      "deeply to read"]) from None
    except ValueError as exc:  # int()'s digit limit, which tomllib lets through
        where = _first_line(text, re.compile(r"\d[\d_]{4299}").search)
        problem = "a number with too many digits" if "digits" in str(exc) else str(exc)
        raise ConfigError(str(path), [f"{where}invalid TOML: {problem}"]) from None


def _first_line(text: str, found: Callable[[str], object]) -> str:
    """``"N: key: "`` for the first line where ``found`` is true (best effort: "" if none)."""
    for n, line in enumerate(text.split("\n"), 1):
        if found(line):
            key = re.match(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=", line)
            return f"{n}: {_printable(key.group(1))}: " if key else f"{n}: "
    return ""


def parse_config(path: Path, text: str) -> Config:
    """Check config text; raise ConfigError listing every problem."""
    raw = _load_toml(path, text)
    _check_values(path, text, raw)
    check = _Checker(path, text)
    check.unknown("", None, raw, _TOP_KEYS)
    digest = raw.get("digest", {})
    if not isinstance(digest, dict):
        check.add("", None, "digest", "expected a [digest] table")
        digest = {}
    check.unknown("digest", None, digest, _DIGEST_KEYS)
    base = path.parent
    site_url = _typed(check, "digest", None, digest, "site_url", str, None, "a URL")
    if site_url is not None:
        parts = urlsplit(site_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            check.add("digest", None, "site_url",
                      f"{site_url!r} is not an absolute http(s) URL (feeds need one for rel=self)")
            site_url = None
        elif re.search(r"[\s\x00-\x1f\x7f<>\"]", site_url) or parts.query or parts.fragment:
            check.add("digest", None, "site_url", f"{site_url!r}: use a plain base URL, with no "
                      "spaces, control characters, ?query or #fragment")
            site_url = None
        elif not site_url.endswith("/"):
            site_url += "/"
    feed_size = _integer(check, "digest", None, digest, "feed_size", 50, 1, MAX_FEED_SIZE,
                         " entries")
    also_new = _integer(check, "digest", None, digest, "also_new", 30, 0, MAX_ALSO_NEW)
    templates = None
    if "templates" in digest:
        templates = _path(base, check, digest, "templates", "")
        if not templates.is_dir():
            check.add("digest", None, "templates", f"{templates} is not a folder")
    timezone = _typed(check, "digest", None, digest, "timezone", str, "UTC", "an IANA zone name")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        check.add("digest", None, "timezone",
                  f"unknown time zone {timezone!r} (use a name like 'Europe/Berlin')")
        timezone = "UTC"
    subs_raw = raw.get("subscribers", [])
    if not isinstance(subs_raw, list):
        check.add("", None, "subscribers", "expected [[subscribers]] tables")
        subs_raw = []
    names: set[str] = set()
    subscribers = [_subscriber(check, i, s, names) for i, s in enumerate(subs_raw)]
    config = Config(
        path=path,
        title=_typed(check, "digest", None, digest, "title", str, "Papers digest", "a string"),
        inbox=_path(base, check, digest, "inbox", "inbox"),
        data_dir=_path(base, check, digest, "data_dir", "data"),
        feeds_dir=_path(base, check, digest, "feeds_dir", "feeds"),
        site_dir=_path(base, check, digest, "site_dir", "site"),
        site_url=site_url, feed_size=feed_size, also_new=also_new,
        templates=templates, timezone=timezone,
        intro=_typed(check, "digest", None, digest, "intro", str, "", "a string (Markdown)"),
        smtp=_smtp(base, path, check, raw.get("smtp")),
        sources=_sources(base, check, raw.get("sources", [])),
        poll_interval=_interval(check, digest),
        ranking=_ranking(base, check, raw.get("ranking")),
        subscribers=tuple(s for s in subscribers if s is not None),
        store_url=_store_url(check, raw.get("store")),
        enrich=_typed(check, "digest", None, digest, "enrich", bool, True, "true or false"),
        enrich_budget=_integer(check, "digest", None, digest, "enrich_budget", 30, 0,
                               MAX_ENRICH_BUDGET, " seconds"),
    )
    _check_site(check, config)
    if check.problems:
        raise ConfigError(str(path), check.problems)
    return config


def _check_site(check: _Checker, config: Config) -> None:
    """The site folder is published whole: it must not hold the store, secret or config."""
    site = config.site.resolve()
    private = [("data_dir", config.data_dir.resolve()), ("config", config.path.resolve())]
    for what, path in private:
        if path == site or path.is_relative_to(site):
            check.add("digest", None, "site_dir",
                      f"{config.site} would publish the {what} ({path}) with the site; use a "
                      "folder of its own, such as \"site\"")
            return
    data = config.data_dir.resolve()
    if site.is_relative_to(data):  # the server never serves the data folder: nor its pages
        check.add("digest", None, "site_dir",
                  f"{config.site} is inside data_dir ({data}), which is never published; use "
                  "a folder outside it, such as \"site\"")
        return
    if config.feeds_dir.resolve() == site:
        check.add("digest", None, "site_dir", f"{config.site} is also feeds_dir; give the feeds "
                  "a folder of their own (inside the site is fine, e.g. \"site/feeds\")")


def load_config(path: Path | str | None = None, *,
                reader: Callable[[Path], str] | None = None) -> Config:
    """Load the config at ``path`` (default: $DIGEST_CONFIG, then ./config.toml)."""
    chosen = Path(path or os.environ.get("DIGEST_CONFIG") or DEFAULT_CONFIG)
    try:
        text = reader(chosen) if reader else chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(chosen), ["no such file; pass --config PATH or create "
                                        "config.toml (see README)"]) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(_printable(str(chosen)), [f"cannot read: {exc}"]) from None
    return parse_config(chosen.resolve(), text)
