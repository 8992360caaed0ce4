"""The typed records that flow between pipeline stages (all frozen, all tuples)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from .identity import search_url


@dataclass(frozen=True, slots=True)
class Paper:
    """One paper, as a source read it or as the store holds it."""

    key: str
    title: str
    abstract: str
    authors: int | None = None
    author_names: tuple[str, ...] = ()
    published: date | None = None
    date_raw: str | None = None
    upvotes: int | None = None
    links: tuple[str, ...] = ()  # more links: PDF, code repository, project page, ...
    arxiv_id: str | None = None
    url: str | None = None  # the paper's page (arXiv /abs/ or the HF paper page)
    source: str = ""
    line: int = 0
    first_seen: datetime | None = None
    summary: str = ""  # a short summary the source gives beside the abstract (HF ai_summary)
    version: int | None = None  # the arXiv version this sighting is of (v2 -> 2)
    revision: bool = False  # the listing announces a new version of an older paper, not a new one


Source = Literal["hf-daily", "arxiv", "none"]  # who resolved a paper (enrich)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What is known of one paper's identity, keyed like the paper.

    ``source`` says who resolved it ("hf-daily", "arxiv") or "none". An unresolved paper
    is ``pending`` when the lookup could not finish this run (budget spent, an error): it
    is asked again next run. Otherwise it was looked for and not found, and is not asked
    again. ``reason`` says why it is unresolved.
    """

    key: str
    title: str
    arxiv_id: str | None = None
    url: str | None = None
    author_names: tuple[str, ...] = ()
    source: Source = "none"
    pending: bool = False
    reason: str = ""
    failed: bool = False  # its own lookup failed this pass (an error, not the budget)
    listed: bool = False  # its day's HF listing answered (and did not have it)

    @property
    def resolved(self) -> bool:
        return self.source != "none"

    @property
    def final(self) -> bool:
        """Nothing more to ask about this paper (resolved, or looked for and not found)."""
        return self.resolved or not self.pending

    @property
    def link(self) -> str:
        """The paper's page, or the HF search for its title: never nothing."""
        return self.url or search_url(self.title)


@dataclass(frozen=True, slots=True)
class ParseWarning:
    """A line a parser could not make sense of; reported, never fatal."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: warning: {self.message}"


@dataclass(frozen=True, slots=True)
class ParsedDump:
    """Everything one dump file yielded."""

    path: str
    sha256: str
    shape: str
    page_date: date | None
    page_date_raw: str | None
    papers: tuple[Paper, ...]
    warnings: tuple[ParseWarning, ...] = ()


@dataclass(frozen=True, slots=True)
class Keyword:
    """A keyword or phrase of interest with its weight."""

    term: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Profile:
    """One subscriber: who they are and what they want to read about."""

    name: str
    email: str | None = None
    keywords: tuple[Keyword, ...] = ()
    exclude: tuple[Keyword, ...] = ()
    min_score: float = 0.0
    max_items: int = 20
    feed: bool = True
    mail: bool = True  # e-mail this subscriber's digests (when [smtp] is configured)
    cadence: str = "immediate"  # when the daemon publishes (see cadence.py)
    timezone: str | None = None  # the subscriber's zone for the cadence (None: digest-wide)
    interest: str = ""  # a sentence about what the reader wants (low-weight query + semantic)


@dataclass(frozen=True, slots=True)
class Vote:
    """A reader's 👍 (``like``) or 👎 on one paper, as the store keeps it."""

    paper: Paper
    like: bool
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """How one keyword matched one paper: the explanation behind a score."""

    term: str
    weight: float
    title_hits: int
    abstract_hits: int
    contribution: float
    via: str | None = None  # set when ``term`` is one word of this unmatched-as-a-whole phrase


INTEREST = "interest"  # Match.via of the words of a reader's interest sentence


@dataclass(frozen=True, slots=True)
class Ranked:
    """A paper with its score and the keyword matches that produced it."""

    paper: Paper
    score: float
    matches: tuple[Match, ...]
    rank: int = 0
    similar: tuple[str, ...] = ()  # titles of liked papers this one is closest to, when it moved
    learned: bool = False  # in the picks through the learned signals, not a keyword match

    @property
    def terms(self) -> tuple[str, ...]:
        """The configured keywords that matched (wholly or by some words), strongest first."""
        return tuple(dict.fromkeys(m.via or m.term for m in self.matches))


@dataclass(frozen=True, slots=True)
class Digest:
    """One subscriber's digest issue, ready to render."""

    title: str
    profile: Profile
    number: int
    generated_at: datetime
    covers_from: datetime | None
    covers_to: datetime
    new_count: int
    items: tuple[Ranked, ...]
    others: tuple[Paper, ...]
    others_total: int
    page_dates: tuple[date, ...] = ()
    feed_url: str | None = None
    intro: str = ""  # the operator's Markdown note shown at the top (trusted text)


@dataclass(frozen=True, slots=True)
class LinkReport:
    """What one enrichment pass did: papers looked up, linked (by whom), left pending."""

    looked_up: int
    from_hf: int
    from_arxiv: int
    pending: int
    seconds: float
    why_pending: tuple[str, ...] = ()

    @property
    def linked(self) -> int:
        return self.from_hf + self.from_arxiv

    def line(self) -> str:
        text = (f"links: {self.linked} of {self.looked_up} papers without a link found "
                f"({self.from_hf} in the HF daily listing, {self.from_arxiv} on arXiv) in "
                f"{self.seconds:.1f} s")
        if self.pending:
            text += (f"; {self.pending} asked again next run ({'; '.join(self.why_pending)}),"
                     " meanwhile they link to a search for their title")
        return text


@dataclass(slots=True)
class RunReport:
    """What one run did, counted per stage (the CLI prints it).

    ``sink``, when set, hears each warning and rejection the moment it happens, so they
    reach the user even if the run fails later.
    """

    dumps_ingested: list[str] = field(default_factory=list)
    dumps_duplicate: list[tuple[str, str]] = field(default_factory=list)
    dumps_rejected: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    new_papers: int = 0
    new_per_dump: dict[str, int] = field(default_factory=dict)
    total_papers: int = 0
    digests: list[dict[str, object]] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # readers another worker was making
    feeds_written: list[str] = field(default_factory=list)
    feeds_unchanged: list[str] = field(default_factory=list)
    site_written: list[str] = field(default_factory=list)  # site pages whose bytes changed
    sink: Callable[[str], None] | None = None
    delivery: Any = None  # send.SendReport when e-mail went out
    links: LinkReport | None = None  # what enrichment looked up, when it ran

    def warn(self, message: str) -> None:
        """Record a warning (``file:line: warning: ...``)."""
        self.warnings.append(message)
        if self.sink:
            self.sink(message)

    def reject(self, message: str) -> None:
        """Record a file that could not be ingested (an error naming it)."""
        self.dumps_rejected.append(message)
        if self.sink:
            self.sink(f"digest: error: {message}")

    @property
    def changed(self) -> bool:
        """True when the run wrote anything at all."""
        return bool(self.dumps_ingested or self.digests or self.feeds_written or
                    self.site_written)
