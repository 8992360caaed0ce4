"""The signed links of one subscriber on the web face (pure: no I/O).

Every link is under ``site_url``: ``unsubscribe`` (RFC 8058 one-click; GET shows a button,
POST acts), ``resubscribe``, ``vote`` (one per paper and direction) and ``feedback`` (the
reader's votes, with undo). The query carries the subscriber ``u``, for a vote the paper
key ``p`` and the direction ``v``, and the token ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from .tokens import FEEDBACK, UNSUBSCRIBE, sign, vote_purpose, vote_subject

LIKE, DISLIKE = "like", "dislike"


@dataclass(frozen=True, slots=True)
class WebLinks:
    """The signed URLs of one subscriber (``base`` is ``site_url``, ending in "/")."""

    base: str
    secret: bytes
    subscriber: str
    public: bool = False  # links of public site pages: their vote pages show no feedback link

    def _url(self, path: str, **query: str) -> str:
        return f"{self.base}{path}?{urlencode(query)}"

    @property
    def unsubscribe(self) -> str:
        """The one-click unsubscribe URL (the same one ``List-Unsubscribe`` carries)."""
        return self._url("unsubscribe", u=self.subscriber, t=self.unsubscribe_token)

    @property
    def unsubscribe_token(self) -> str:
        """The token of ``unsubscribe`` and ``resubscribe``."""
        return sign(self.secret, UNSUBSCRIBE, self.subscriber)

    @property
    def resubscribe(self) -> str:
        """Where the unsubscribe confirmation's "subscribe again" button posts."""
        return self._url("resubscribe", u=self.subscriber, t=self.unsubscribe_token)

    def vote(self, key: str, like: bool) -> str:
        """The 👍 (``like``) or 👎 link of one paper."""
        token = sign(self.secret, vote_purpose(like, self.public),
                     vote_subject(self.subscriber, key))
        if self.public:  # s=1: signed for a site page (anyone with the page's URL has it)
            return self._url("vote", u=self.subscriber, p=key, v=LIKE if like else DISLIKE,
                             s="1", t=token)
        return self._url("vote", u=self.subscriber, p=key, v=LIKE if like else DISLIKE,
                         t=token)

    @property
    def feedback(self) -> str:
        """The subscriber's feedback page: their votes, each with an undo button."""
        return self._url("feedback", u=self.subscriber,
                         t=sign(self.secret, FEEDBACK, self.subscriber))


def links_for(site_url: str | None, secret: bytes | None, subscriber: str) -> WebLinks | None:
    """The subscriber's links, or None without a ``site_url`` (nothing to link to)."""
    if not site_url or secret is None:
        return None
    return WebLinks(site_url, secret, subscriber)
