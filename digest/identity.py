"""Paper identity: the key that makes the same paper from two dumps one paper."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import urlencode, urlsplit

_NON_WORD = re.compile(r"[^\w\s]|_")
_ARXIV = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$", re.I)
# Characters XML 1.0 forbids (C0 controls but tab/newline/CR, surrogates, U+FFFE/U+FFFF).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_HTTP_URL = re.compile(r"^https?://[^\s<>\"'\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]+$")


def normalise_title(title: str) -> str:
    """NFKC, case-folded, punctuation dropped and whitespace collapsed to single spaces."""
    folded = unicodedata.normalize("NFKC", title).casefold()
    return " ".join(_NON_WORD.sub(" ", folded).split())


def normalise_arxiv_id(value: str) -> str | None:
    """`arXiv:2403.01234v2` -> `2403.01234`; None when it is not an arXiv id."""
    match = _ARXIV.match(value.strip())
    return match.group(1).lower() if match else None


def paper_key(title: str, arxiv_id: str | None = None) -> str:
    """The store key: `arxiv:<id>` where the id is known, else `title:<normalised title>`."""
    if arxiv_id:
        return f"arxiv:{arxiv_id}"
    return f"title:{normalise_title(title)}"


def short_hash(text: str, length: int = 16) -> str:
    """A stable hex digest used in feed ids and file names."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def strip_xml_illegal(text: str) -> str:
    """Remove code points that no XML document (feed, HTML e-mail) may carry."""
    return _XML_ILLEGAL.sub("", text)


def content_hash(text: str) -> str:
    """Identity of a dump: the hash of its decoded, LF-normalised text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def http_url(url: str | None) -> str | None:
    """``url`` when it is an absolute http(s) URL with a host and nothing inside it that
    could break out of an href or hide (white space, quotes, angle brackets, controls,
    invisible characters); None otherwise. Parsers keep and templates link only these."""
    if not url or not _HTTP_URL.match(url) or not url.isprintable():
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        return None
    return url if host else None


HF_SEARCH = "https://huggingface.co/papers"
_MAX_SEARCH = 400  # characters of a title put in a search link


def search_url(title: str) -> str:
    """The HF papers search for ``title``: the link of a paper nothing else is known of."""
    words = " ".join(strip_xml_illegal(title).split())[:_MAX_SEARCH]
    return f"{HF_SEARCH}?{urlencode({'q': words})}"


def paper_link(url: str | None, arxiv_id: str | None, title: str) -> str:
    """Where a paper links: its page, else its arXiv abstract, else a search for its
    title. Never nothing, and only ever a safe http(s) URL (``http_url``)."""
    if page := http_url(url):
        return page
    if arxiv_id and (arxiv := normalise_arxiv_id(arxiv_id)):
        return f"https://arxiv.org/abs/{arxiv}"
    return search_url(title)
