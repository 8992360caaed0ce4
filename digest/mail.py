"""Building digest e-mails (pure: no I/O). Sending lives in send.py.

A message is ``multipart/alternative``: the Markdown digest as ``text/plain`` first, then
the HTML digest with its CSS inlined by css-inline (no remote stylesheets, ``@media``
rules for dark mode and phones kept in a ``<style>`` block). The Message-ID depends only
on the subscriber and the issue number, so a retry of the same issue carries the same id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

import css_inline

from .config import SmtpConfig
from .identity import short_hash
from .links import WebLinks
from .models import Digest

_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
# ASCII headers stay on one line (RFC 5322 allows 998): refolding List-Unsubscribe breaks
# DKIM at some relays. Non-ASCII headers need RFC 2047 encoded words of at most 75
# characters, so such messages keep the usual folding. Bodies are quoted-printable.
WIRE = policy.SMTP.clone(max_line_length=998)


def wire_bytes(msg: EmailMessage) -> bytes:
    """The message as sent: CRLF line ends, headers unfolded when they are all ASCII."""
    ascii_headers = all(str(v).isascii() for v in msg.values())
    return msg.as_bytes(policy=WIRE if ascii_headers else policy.SMTP)
_HEADER_UNSAFE = re.compile(r"[\r\n\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Where a subscriber unsubscribes: a signed HTTPS link, and optionally a mailto."""

    url: str | None
    mailto: str | None


def unsubscribe_for(links: WebLinks | None, mailto: str | None, name: str) -> Unsubscribe:
    """The one-click unsubscribe targets of one subscriber (RFC 8058): the signed link of
    ``links`` (None without a ``site_url``) and the optional mailto."""
    url = links.unsubscribe if links else None
    box = None
    if mailto:
        box = f"mailto:{mailto}?subject={quote(f'unsubscribe {name}')}"
    return Unsubscribe(url, box)


def header_text(text: str) -> str:
    """Text safe for one header line: no CR, LF or other control characters."""
    return " ".join(_HEADER_UNSAFE.sub(" ", text).split())


def subject_for(digest: Digest) -> str:
    """`Papers digest: 12 new papers, 4 on CLIP, data curation`."""
    n = digest.new_count
    subject = f"{digest.title}: {n} new paper{'s' if n != 1 else ''}"
    if digest.items and digest.profile.keywords:
        counts: dict[str, int] = {}
        for item in digest.items:
            for term in item.terms:
                counts[term] = counts.get(term, 0) + 1
        top = sorted(counts, key=lambda t: (-counts[t], t.casefold()))[:3]
        subject += f", {len(digest.items)} on {', '.join(top)}"
    return header_text(subject)


def message_id(digest: Digest, sender: str, store_id: str) -> str:
    """Stable for a subscriber and issue of one store: retries and duplicates share it,
    while another list or a store started afresh never reuses it."""
    domain = sender.rpartition("@")[2] or "digest.invalid"
    who = short_hash(f"{store_id}\x00{digest.profile.name}", 16)
    return f"<digest.{digest.number}.{who}@{domain}>"


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes; keep @media rules; fetch nothing."""
    result: str = _INLINER.inline(html)
    return result


def build_message(digest: Digest, text: str, html: str, smtp: SmtpConfig, list_host: str,
                  unsubscribe: Unsubscribe, store_id: str) -> EmailMessage:
    """The complete message for one subscriber's digest issue."""
    assert digest.profile.email is not None
    msg = EmailMessage()
    # The configured display name, else the digest's title; non-ASCII names go out as
    # RFC 2047 encoded words (the SMTP policy of wire_bytes).
    name = header_text(smtp.from_name) if smtp.from_name else header_text(digest.title)
    msg["From"] = Address(name, addr_spec=smtp.sender)
    msg["To"] = Address(header_text(digest.profile.name), addr_spec=digest.profile.email)
    if smtp.reply_to:
        msg["Reply-To"] = smtp.reply_to
    msg["Date"] = format_datetime(digest.generated_at)
    msg["Subject"] = subject_for(digest)
    msg["Message-ID"] = message_id(digest, smtp.sender, store_id)
    msg["List-Id"] = f"{header_text(digest.title)} <digest.{list_host}>"
    targets = [t for t in (unsubscribe.url, unsubscribe.mailto) if t]
    if targets:
        msg["List-Unsubscribe"] = ", ".join(f"<{t}>" for t in targets)
    if unsubscribe.url and unsubscribe.url.startswith("https://"):  # RFC 8058 wants HTTPS
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(inline_css(html), subtype="html", charset="utf-8",
                        cte="quoted-printable")
    return msg
