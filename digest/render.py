"""Rendering digests to Markdown and HTML with Jinja2 (pure: returns strings).

Paper text is untrusted. The HTML environment autoescapes everything. The Markdown
environment escapes every ``{{ expression }}`` for Markdown through ``finalize`` (so a
template cannot forget to), and ``<`` becomes ``&lt;`` because Python-Markdown passes
raw HTML through even after a backslash. Both environments drop control characters
(``clean_text``) from every expression, so a stored value from an older version that
holds one cannot reach a page, an e-mail or a feed.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import markdown
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
)
from markupsafe import Markup, escape

from .errors import ConfigError
from .fit import FitPlan
from .identity import http_url, paper_link, strip_xml_illegal
from .links import WebLinks
from .models import INTEREST, Digest, Keyword, Paper, Ranked
from .rank import highlight_spans

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_templates() -> Path:
    """The shipped templates: inside the installed package, or the repo's templates/."""
    installed = _PACKAGE_DIR / "templates"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "templates"


class MarkdownSafe(str):
    """Text already escaped for Markdown; ``finalize`` leaves it alone."""

    __slots__ = ()


_MD_INLINE = re.compile(r"([\\`*_\[\]])")
_MD_LINE_START = re.compile(r"^(\s*)([#>+!-]|\d+\.)")


# What XML forbids, plus DEL and the C1 controls (HTML parse errors, invisible in text).
_CONTROLS = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # C1, bidi overrides


def clean_text(text: str) -> str:
    """``text`` without control characters (tab and line breaks stay), bidirectional
    overrides (which can make a title read as something else) or XML non-characters."""
    return _CONTROLS.sub("", strip_xml_illegal(text))


def md_escape(value: object, *, line_start: bool = True) -> str:
    """Escape text so Markdown shows it literally and renders no HTML from it."""
    if isinstance(value, MarkdownSafe):
        return value
    text = re.sub(r"\s+", " ", clean_text(str(value)))
    text = _MD_INLINE.sub(r"\\\1", text).replace("<", "&lt;")
    if not line_start:
        return text
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def _finalize_md(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, MarkdownSafe):
        return MarkdownSafe(clean_text(value))
    if isinstance(value, int | float):
        return value
    return md_escape(value)


def _finalize_html(value: object) -> object:
    """Every HTML expression without control characters (then autoescaped as usual)."""
    if isinstance(value, Markup):
        return Markup(clean_text(str(value)))
    if isinstance(value, str):
        return clean_text(value)
    return value


def highlight_html(text: str, keywords: Sequence[Keyword]) -> Markup:
    """Escaped text with keyword matches wrapped in <mark>."""
    return _highlight_html(text, tuple(keywords))


def highlight_md(text: str, keywords: Sequence[Keyword]) -> MarkdownSafe:
    """Markdown-escaped text with keyword matches in bold."""
    return _highlight_md(text, tuple(keywords))


@lru_cache(maxsize=4096)  # a digest and its e-mail highlight the same abstracts
def _highlight_html(text: str, keywords: tuple[Keyword, ...]) -> Markup:
    return Markup(_marked_html(text, highlight_spans(text, keywords), 0, len(text)))


@lru_cache(maxsize=4096)
def _highlight_md(text: str, keywords: tuple[Keyword, ...]) -> MarkdownSafe:
    return MarkdownSafe(_marked_md(text, highlight_spans(text, keywords), 0, len(text)))


def _clipped(spans: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of ``spans`` inside ``[lo, hi)``."""
    return [(max(a, lo), min(b, hi)) for a, b in spans if a < hi and b > lo]


def _marked_html(text: str, spans: Sequence[tuple[int, int]], lo: int, hi: int) -> str:
    """``text[lo:hi]`` escaped, with the ``spans`` in it wrapped in <mark>."""
    out: list[str] = []
    pos = lo
    for start, end in _clipped(spans, lo, hi):
        out.append(str(escape(text[pos:start])))
        out.append(f"<mark>{escape(text[start:end])}</mark>")
        pos = end
    out.append(str(escape(text[pos:hi])))
    return "".join(out)


def _marked_md(text: str, spans: Sequence[tuple[int, int]], lo: int, hi: int) -> str:
    """``text[lo:hi]`` escaped for Markdown, with the ``spans`` in it in bold."""
    out: list[str] = []
    pos = lo
    for start, end in _clipped(spans, lo, hi):
        out.append(md_escape(text[pos:start], line_start=pos == lo))
        out.append(f"**{md_escape(text[start:end], line_start=False)}**")
        pos = end
    out.append(md_escape(text[pos:hi], line_start=pos == lo))
    return "".join(out).strip()


# A sentence ends at . ! or ? (and any closing quotes or brackets) followed by white space
# and something that can start a sentence; "e.g. the" and "et al. (2020)" do not end one.
_SENTENCE_END = re.compile(r"""[.!?]["'\u2019\u201d)\]]*\s+(?=["'\u2018\u201c(\[]?[A-Z0-9])""")
_NOT_AN_END = re.compile(r"(?:\b(?:e\.g|i\.e|et al|cf|vs|viz|fig|figs|eq|eqs|sec|ref|refs|"
                         r"no|approx|resp|incl|dr|mr|ms|prof|st|ca)|\b[A-Z])\.$", re.I)
EXCERPT_SENTENCES = 3
EXCERPT_CHARS = 700  # a window of long "sentences" (no full stops at all) is cut to this
ELLIPSIS = "\u2026"


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, white space between them left out."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        stop = m.start() + 1
        if _NOT_AN_END.search(text, max(0, stop - 8), stop):
            continue
        stop = m.end() - len(m.group()) + len(m.group().rstrip())
        if text[start:stop].strip():
            spans.append((start, stop))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def excerpt_window(text: str, keywords: Sequence[Keyword],
                   sentences: int = EXCERPT_SENTENCES,
                   max_chars: int = EXCERPT_CHARS) -> tuple[int, int]:
    """The part of ``text`` an e-mail shows: the window of at most ``sentences`` consecutive
    sentences with the most keyword matches (of those, the one most centred on its matches,
    then the earliest; the opening sentences when nothing matches), cut near ``max_chars``
    at word boundaries around its first match when its sentences are very long.
    ``(0, len(text))`` when nothing needs cutting. Matches are ``highlight_spans``: the very
    words the page highlights."""
    parts = sentence_spans(text)
    if not parts:
        return 0, len(text)
    spans = highlight_spans(text, tuple(keywords))
    hits = [0] * len(parts)  # matches starting in each sentence: one sweep (both in order)
    j = 0
    for a, _ in spans:
        while j < len(parts) - 1 and a >= parts[j + 1][0]:
            j += 1
        hits[j] += a >= parts[j][0]
    width = min(sentences, len(parts))

    def rank(i: int) -> tuple[int, float, int]:  # most matches, then centred on them, earliest
        window = range(i, i + width)
        count = sum(hits[j] for j in window)
        mass = sum(j * hits[j] for j in window) / count if count else i + (width - 1) / 2
        return -count, abs(i + (width - 1) / 2 - mass), i

    best = min(range(len(parts) - width + 1), key=rank)
    start, stop = parts[best][0], parts[best + width - 1][1]
    lo, hi = start, stop
    if stop - start > max_chars:
        first = next((a for a, _ in spans if start <= a < stop), start)
        lo = max(start, min(first - max_chars // 4, stop - max_chars))
        hi = lo + max_chars
        if start < lo < first:
            space = text.find(" ", lo, first)
            lo = space + 1 if space >= 0 else lo
        space = text.rfind(" ", max(lo, first) + 1, hi)
        hi = space if space > 0 else hi
    if lo <= 0 and hi >= len(text.rstrip()):
        return 0, len(text)
    return lo, hi


@dataclass(frozen=True, slots=True)
class Excerpt:
    """A highlighted excerpt (Markup or MarkdownSafe), and whether anything was cut."""

    text: str
    cut: bool


def _excerpt(text: str, keywords: Sequence[Keyword], mark: Callable[..., str],
             ) -> tuple[str, bool]:
    lo, hi = excerpt_window(text, keywords)
    body = mark(text, highlight_spans(text, tuple(keywords)), lo, hi)
    if lo == 0 and hi == len(text):
        return body, False
    before = f"{ELLIPSIS} " if lo > 0 else ""
    after = f" {ELLIPSIS}" if hi < len(text) else ""
    return f"{before}{body}{after}", True


def excerpt_html(text: str, keywords: Sequence[Keyword]) -> Excerpt:
    """About three sentences of ``text`` around its matches, escaped and highlighted."""
    body, cut = _excerpt(text, keywords, _marked_html)
    return Excerpt(Markup(body), cut)


def excerpt_md(text: str, keywords: Sequence[Keyword]) -> Excerpt:
    """``excerpt_html`` for Markdown."""
    body, cut = _excerpt(text, keywords, _marked_md)
    return Excerpt(MarkdownSafe(body), cut)


def authors(paper: Paper) -> str:
    """`Ada Lovelace, Alan Turing, Grace Hopper +4 more`; `7 authors` when the source gave
    only a count; "" when it gave neither. Plain text (the templates escape it)."""
    names = [n for n in (" ".join(clean_text(n).split()) for n in paper.author_names) if n]
    total = max(len(names), paper.authors or 0)
    if not names:
        return f"{total} author{'s' if total != 1 else ''}" if total else ""
    shown = names[:AUTHORS_SHOWN]
    more = total - len(shown)
    return f"{', '.join(shown)} +{more} more" if more else ", ".join(shown)


AUTHORS_SHOWN = 3


_MD_URL_UNSAFE = {c: f"%{ord(c):02X}" for c in "[]()`\\*_!{}|"}


def md_url(url: str) -> MarkdownSafe:
    """An http(s) URL made inert for Markdown: characters that start Markdown syntax inside
    an autolink (``[x](javascript:...)``, backticks, backslashes) are percent-encoded."""
    return MarkdownSafe("".join(_MD_URL_UNSAFE.get(c, c) for c in clean_text(url)))


def safe_url(url: str | None) -> str | None:
    """Only absolute http(s) URLs with a host, and no white space, quotes, angle brackets
    or control characters, ever reach an href."""
    return http_url(url)


def link_of(paper: Paper) -> str:
    """Where a paper's title links: its page, its arXiv abstract, or a search for it."""
    return paper_link(paper.url, paper.arxiv_id, paper.title)


def fmt_date(value: date | datetime | None) -> str:
    """`2026-11-23` for dates, `2026-11-23 08:00 UTC` for times."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    return value.isoformat()


def explain(item: Ranked) -> str:
    """Why a paper matched: `CLIP (title 1, abstract 3), "graph" of graph networks (abstract 2)`.

    Words of the interest sentence read `"pairs" of your interest (abstract 2)`.
    """
    return ", ".join(f"{name} ({where})" for name, where in explain_parts(item))


def explain_parts(item: Ranked) -> list[tuple[str, str]]:
    """``explain`` as (what matched, where) pairs: `("CLIP", "title 1, abstract 3")`; each
    matched keyword once (the page shows the first as a chip, the second beside it)."""
    whole = {m.term for m in item.matches if m.via is None}
    parts = []
    for m in item.matches:
        if m.via in whole:
            continue  # the phrase matched as a whole: its single words add nothing to say
        where = [f"{field} {n}" for field, n in (("title", m.title_hits),
                                                 ("abstract", m.abstract_hits)) if n]
        via = "your interest" if m.via == INTEREST else m.via
        name = f'"{m.term}" of {via}' if via else m.term
        parts.append((name, ", ".join(where)))
    return parts


def learned_note(item: Ranked) -> str:
    """What the learned signals add: the liked papers a pick is like, or why it is in."""
    notes = []
    if item.similar:
        notes.append("similar to papers you liked: " + "; ".join(item.similar))
    if item.learned:
        notes.append("no keyword matched: picked for being like your best matches")
    return "; ".join(notes)


def _common(env: Environment) -> Environment:
    env.globals.update(fmt_date=fmt_date, explain=explain, explain_parts=explain_parts,
                       learned_note=learned_note, safe_url=safe_url, authors=authors,
                       paper_link=link_of)
    env.filters["authors"] = authors
    env.trim_blocks = True
    env.lstrip_blocks = True
    return env


class Renderer:
    """Jinja2 environments over the user's template folder, then the bundled one."""

    def __init__(self, override: Path | None = None) -> None:
        self.override = override
        self._hashes: dict[str, str] = {}  # template name -> sha256 of its source
        self._override_hashes: dict[str, str] | None = None
        self.folders = [*([str(override)] if override else []), str(bundled_templates())]
        self.loader = loader = ChoiceLoader([FileSystemLoader(self.folders)])
        self.html = _common(Environment(loader=loader, autoescape=True,
                                        finalize=_finalize_html, undefined=StrictUndefined))
        self.html.globals["highlight"] = highlight_html
        self.html.globals["excerpt"] = excerpt_html
        self.text = _common(Environment(loader=loader, autoescape=False,  # noqa: S701
                                        finalize=_finalize_md, undefined=StrictUndefined,
                                        keep_trailing_newline=True))
        self.text.globals["highlight"] = highlight_md
        self.text.globals["excerpt"] = excerpt_md
        self.text.filters["raw"] = MarkdownSafe
        self.text.filters["url"] = md_url

    TEMPLATES = ("digest.md.j2", "digest.html.j2", "feed_entry.html.j2", "_macros.html.j2",
                 "_style.css")
    # What the site's pages are made of (site.py fingerprints their sources).
    SITE_TEMPLATES = ("site_base.html.j2", "site_index.html.j2", "site_archive.html.j2",
                      "site_issue.html.j2", "_macros.html.j2", "_style.css", "_site.css")

    def check(self) -> None:
        """Compile every template now, so a syntax error stops a run before it starts."""
        for name in dict.fromkeys((*self.TEMPLATES, *self.SITE_TEMPLATES)):
            self._render(self.text if name.endswith(".md.j2") else self.html, name, None)

    def source(self, name: str) -> str:
        """The source of the template ``name`` as loaded (the user's copy first)."""
        try:
            text, _, _ = self.loader.get_source(self.html, name)
        except TemplateError as exc:
            raise ConfigError(name, [f"template error: {exc} (key [digest].templates)"]) from None
        return text

    def source_hash(self, name: str) -> str:
        """sha256 of ``source(name)``, worked out once per renderer (the feeds' and the
        site's fingerprints both ask, every run)."""
        found = self._hashes.get(name)
        if found is None:
            found = self._hashes[name] = hashlib.sha256(self.source(name).encode()).hexdigest()
        return found

    def override_hashes(self) -> dict[str, str]:
        """sha256 of every file in the override folder, by path inside it (once per
        renderer: a run's renderer is made again when a file there changes)."""
        if self._override_hashes is None:
            found: dict[str, str] = {}
            if self.override is not None and self.override.is_dir():
                for path in sorted(self.override.rglob("*")):
                    if path.is_file():
                        with contextlib.suppress(OSError):
                            found[str(path.relative_to(self.override))] = hashlib.sha256(
                                path.read_bytes()).hexdigest()
            self._override_hashes = found
        return dict(self._override_hashes)

    def _render(self, env: Environment, name: str, context: dict[str, Any] | None) -> str:
        try:
            template = env.get_template(name)
            return "" if context is None else template.render(context)
        except TemplateSyntaxError as exc:
            where = exc.filename or name
            raise ConfigError(where, [f"{exc.lineno}: template error: {exc.message}"]) from None
        except TemplateError as exc:
            where = self._where(name)
            raise ConfigError(where, [f"template error: {exc} (key [digest].templates)"]) from None

    def _where(self, name: str) -> str:
        for folder in self.folders:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
        return name

    def markdown(self, digest: Digest, unsubscribe: str | None = None,
                 links: WebLinks | None = None, *, mail: bool = False,
                 plan: FitPlan | None = None) -> str:
        """The Markdown digest (with an unsubscribe link when it goes out by e-mail, and the
        reader's 👍/👎 links with ``links``). ``mail``: abstracts trimmed to a few sentences
        around the matches, and ``plan`` (``fit.fit_html``) says what the e-mail leaves out."""
        return self._render(self.text, "digest.md.j2",
                            self._context(digest, unsubscribe, links, mail, plan))

    def html_page(self, digest: Digest, unsubscribe: str | None = None,
                  links: WebLinks | None = None, *, mail: bool = False,
                  plan: FitPlan | None = None) -> str:
        """The HTML digest (a standalone page, e-mail friendly); ``mail`` and ``plan`` as
        for ``markdown``."""
        return self._render(self.html, "digest.html.j2",
                            self._context(digest, unsubscribe, links, mail, plan))

    def page(self, name: str, context: dict[str, Any]) -> str:
        """Any HTML template (site and web pages extend ``site_base.html.j2``)."""
        return self._render(self.html, name, context)

    def feed_entry(self, item: Ranked, keywords: Sequence[Keyword]) -> str:
        """The HTML content of one Atom entry."""
        return self._render(self.html, "feed_entry.html.j2",
                            {"item": item, "keywords": keywords})

    @staticmethod
    def _context(digest: Digest, unsubscribe: str | None = None,
                 links: WebLinks | None = None, mail: bool = False,
                 plan: FitPlan | None = None) -> dict[str, Any]:
        return {"digest": digest, "keywords": digest.profile.keywords,
                "unsubscribe": unsubscribe, "links": links, "mail": mail,
                "plan": plan or FitPlan.whole(digest),
                "intro_md": MarkdownSafe(digest.intro.strip()),
                "intro_html": operator_markdown(digest.intro)}


def operator_markdown(text: str) -> Markup:
    """The operator's own Markdown (config ``intro``) as HTML. Never used for paper text."""
    if not text.strip():
        return Markup("")
    return Markup(markdown.markdown(text, output_format="html"))
