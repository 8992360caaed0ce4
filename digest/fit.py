"""Making a digest's e-mail fit (pure: no I/O). Gmail clips an HTML part above about 102 KB
and hides the rest behind "View entire message", taking the unsubscribe and vote links at
the bottom with it.

``fit_html`` renders the e-mail, and while its HTML *as sent* (after css-inline, which adds
a style attribute to nearly every element) is over the limit, it leaves out first the
abstracts of the lowest-ranked papers (title, meta line and vote links stay), then the
papers themselves from the bottom; the template then says how many more there are and
where (the issue's page on the web, else the feed). Each step is a binary search on a
count, so a digest of n papers costs O(log n) renders, never one per paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from .mail import inline_css
from .models import Digest

MAIL_LIMIT = 100_000  # bytes of inlined HTML; Gmail clips at 102 KB, so a margin is left


@dataclass(frozen=True, slots=True)
class FitPlan:
    """What an e-mail shows of a digest: the first ``items`` of its ``total`` ranked papers,
    the first ``abstracts`` of those with their abstract (summary, abstract, links), the
    rest as title, meta line and vote links only. ``more_url`` is where the left-out papers
    are (the issue's page on the site), ``size`` the bytes of the HTML as sent."""

    total: int
    items: int
    abstracts: int
    more_url: str | None = None
    size: int = 0
    limit: int = MAIL_LIMIT

    @classmethod
    def whole(cls, digest: Digest, more_url: str | None = None) -> FitPlan:
        """Everything: the plan of a page that is not an e-mail, or of one that fits."""
        n = len(digest.items)
        return cls(n, n, n, more_url)

    @property
    def dropped_items(self) -> int:
        """Ranked papers left out of the e-mail altogether."""
        return self.total - self.items

    @property
    def dropped_abstracts(self) -> int:
        """Papers in the e-mail shown without their abstract."""
        return self.items - self.abstracts

    @property
    def cut(self) -> bool:
        """True when the e-mail leaves anything out."""
        return self.items < self.total or self.abstracts < self.items

    def describe(self) -> str:
        """`87 papers shown without abstracts, 113 of 200 papers left out (on the web issue
        page); 99,825 bytes`, for the run's log."""
        parts = []
        if self.dropped_abstracts:
            parts.append(f"{_papers(self.dropped_abstracts)} shown without abstracts")
        if self.dropped_items:
            where = "on the web issue page" if self.more_url else "not on the web"
            parts.append(f"{self.dropped_items} of {_papers(self.total)} left out ({where})")
        over = " (still over: the page around the papers is too large)" \
            if self.size > self.limit else ""
        return f"{', '.join(parts) or 'nothing left out'}; {self.size:,} bytes{over}"


def _papers(n: int) -> str:
    return f"{n} paper{'s' if n != 1 else ''}"


def html_size(html: str, inline: Callable[[str], str] = inline_css) -> int:
    """Bytes of ``html`` as the e-mail carries it: CSS inlined, UTF-8, CRLF line ends and a
    final line end (what a mail client decodes from the quoted-printable part)."""
    sent = inline(html)
    sent += "" if sent.endswith("\n") else "\n"
    return len(sent.encode("utf-8")) + sent.count("\n") - sent.count("\r\n")


def fit_html(digest: Digest, render: Callable[[Digest, FitPlan], str],
             limit: int = MAIL_LIMIT, *, more_url: str | None = None,
             inline: Callable[[str], str] = inline_css) -> tuple[str, FitPlan]:
    """The e-mail HTML of ``digest`` (as ``render`` makes it, before inlining) whose
    inlined size is at most ``limit`` bytes, and the plan it was rendered with.

    Order of sacrifice: abstracts from the lowest-ranked paper upward, then papers from
    the bottom (all without abstracts), then, if that left room, abstracts back for the
    top papers kept. When not even the page without any paper fits (a huge intro), the
    smallest rendering is returned and ``plan.size > limit`` says so.
    """
    n = len(digest.items)
    base = FitPlan(n, n, n, more_url, limit=limit)
    tried: dict[tuple[int, int], tuple[str, int]] = {}

    def attempt(items: int, abstracts: int) -> tuple[str, int]:
        if (items, abstracts) not in tried:
            html = render(digest, replace(base, items=items, abstracts=abstracts))
            tried[items, abstracts] = html, html_size(html, inline)
        return tried[items, abstracts]

    def fits(items: int, abstracts: int) -> bool:
        return attempt(items, abstracts)[1] <= limit

    def largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
        """The largest x in [lo, hi] with ok(x) (ok is monotone: true, then false)."""
        if not ok(lo):
            return None
        while lo < hi:  # ok(lo) holds; the answer is in [lo, hi]
            mid = (lo + hi + 1) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def done(items: int, abstracts: int) -> tuple[str, FitPlan]:
        html, size = attempt(items, abstracts)
        return html, replace(base, items=items, abstracts=abstracts, size=size)

    if fits(n, n):
        return done(n, n)
    abstracts = largest(0, n - 1, lambda a: fits(n, a))
    if abstracts is not None:
        return done(n, abstracts)
    items = largest(0, n - 1, lambda k: fits(k, 0))
    if items is None:
        return done(0, 0)
    abstracts = largest(0, items, lambda a: fits(items, a))
    return done(items, abstracts or 0)
