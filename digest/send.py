"""Delivering the outbox over SMTP: one connection, each message marked sent on acceptance.

Outcomes per message (FIELD-NOTES E13):
* 250 after the data: marked sent at once, in its own commit.
* 4xx, a time-out, a refused or dropped connection: stays pending, retried (the first retry
  on the next run, then after 1, 2, 4 ... minutes, at most 6 hours apart). A lost connection
  is reopened and the pass goes on with the next message, so one bad message never holds
  up the others; messages with fewer attempts go first.
  These retries have no limit: a message waits for the relay as long as it takes.
* 5xx for the recipient or the data, 552 (too big): failed at once (retrying a 550 only
  annoys the relay), with the server's reply and the time (``failed_at``).
* When the connection drops or times out *after the message data went out*, the server may
  have accepted it (RFC 1047): it is retried, with the same Message-ID and the same back-off,
  until ``UNCERTAIN_WINDOW`` has passed since the first such try (``uncertain_since``) and at
  least ``MIN_UNCERTAIN_TRIES`` were made, then marked failed saying how long and how many.
  That, and a crash between the server's 250 and the local commit, are the only ways a
  message can arrive twice.
* Login, TLS or sender refused (530, 535, 550 to MAIL FROM): DeliveryError, nothing marked.
* Failed messages go back in the queue, unchanged, with ``requeue_failed`` (``digest send
  --retry-failed``); never those of a subscriber who unsubscribed.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .config import SmtpConfig
from .errors import DeliveryError
from .faults import checkpoint
from .store import Delivery, Store

Clock = Callable[[], datetime]
MAX_BACKOFF = timedelta(hours=6)
# A message whose tries the server never confirmed (it may have arrived) is given up once
# both hold: this long since the first such try, and at least this many such tries.
UNCERTAIN_WINDOW = timedelta(hours=24)
MIN_UNCERTAIN_TRIES = 3
MAX_RECONNECTS = 3  # lost connections in a row before a pass gives up


@dataclass(slots=True)
class SendReport:
    """What a delivery pass did."""

    sent: list[str] = field(default_factory=list)
    retrying: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_due: int = 0
    cancelled: list[str] = field(default_factory=list)  # unsubscribed while the pass ran


class _Lost(Exception):
    """The connection is gone; ``uncertain`` when the message data had been sent."""

    def __init__(self, reason: str, uncertain: bool) -> None:
        super().__init__(reason)
        self.uncertain = uncertain


class _Refused(Exception):
    """The server answered a step of one message (mail, rcpt, data, end) with an error."""

    def __init__(self, code: int, reply: str, step: str) -> None:
        super().__init__(reply)
        self.code = code
        self.step = step
        self.closing = code == 421


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed tries: 0, then 1, 2, 4 ... min."""
    if attempts <= 1:
        return timedelta(0)
    return min(timedelta(minutes=2 ** (attempts - 2)), MAX_BACKOFF)


def _give_up(d: Delivery, at: datetime) -> bool:
    """True when one more unconfirmed try at ``at`` ends this message's retries."""
    since = d.uncertain_since or at  # none before: this try is the first
    return at - since >= UNCERTAIN_WINDOW and d.uncertain + 1 >= MIN_UNCERTAIN_TRIES


def _hours(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 3600)} h"


@dataclass(slots=True)
class RequeueReport:
    """What ``requeue_failed`` put back in the queue, and what it left failed and why."""

    requeued: list[Delivery] = field(default_factory=list)
    kept: list[tuple[Delivery, str]] = field(default_factory=list)


def why_not_requeued(d: Delivery, unsubscribed: Collection[str],
                     addresses: Mapping[str, str]) -> str | None:
    """Why this failed message must stay failed, or None when it may be sent again.

    ``addresses`` maps each subscriber the config still e-mails to their address.
    """
    if d.subscriber in unsubscribed or d.last_error == "unsubscribed before delivery":
        return f"{d.subscriber} has unsubscribed"
    address = addresses.get(d.subscriber)
    if address is None:
        return (f"{d.subscriber} is gone from the config, has no e-mail address, or has "
                "mail = false")
    if address.casefold() != d.recipient.casefold():
        return (f"it is addressed to {d.recipient} and the config now says {address} "
                "(the next digest goes to the new address)")
    return None


def requeue_failed(store: Store, now: Clock, addresses: Mapping[str, str], *,
                   subscriber: str | None = None) -> RequeueReport:
    """Move failed messages (all, or ``subscriber``'s) back to pending, due now.

    Their attempts and unconfirmed tries start again from nothing; the Message-ID and the
    bytes stay the same, so a message that did arrive before is recognised as a repeat.
    """
    report = RequeueReport()
    unsubscribed = store.unsubscribed()
    todo: dict[int, Delivery] = {}
    for d in store.deliveries(("failed",)):
        if subscriber is not None and d.subscriber != subscriber:
            continue
        why = why_not_requeued(d, unsubscribed, addresses)
        if why is None:
            todo[d.id] = d
        else:
            report.kept.append((d, why))
    done = set(store.requeue_failed(list(todo), now()))
    for delivery_id, d in todo.items():
        if delivery_id in done:
            report.requeued.append(d)
        else:  # unsubscribed (or requeued by someone else) a moment ago
            report.kept.append((d, f"{d.subscriber} has unsubscribed, or it is no longer "
                                   "failed"))
    return report


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def _where(smtp: SmtpConfig) -> str:
    return f"{smtp.host}:{smtp.port}"


def connect(smtp: SmtpConfig) -> smtplib.SMTP:
    """Open, secure and authenticate one SMTP connection.

    DeliveryError for what retrying cannot fix (TLS, login); OSError or SMTPException for
    what it might (refused, time-out, a busy greeting).
    """
    client: smtplib.SMTP | None = None
    try:
        context = None
        if smtp.security != "none":
            context = ssl.create_default_context(
                cafile=str(smtp.ca_file) if smtp.ca_file else None)
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                      context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        client.ehlo()
        if smtp.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        password = smtp.password()
        if smtp.username and password is not None:
            client.login(smtp.username, password.reveal())
        return client
    except smtplib.SMTPAuthenticationError as exc:
        problem = (f"authentication failed for user {smtp.username!r} "
                   f"({_reply(exc.smtp_code, exc.smtp_error)}); check [smtp].username and "
                   f"${smtp.password_env}")
    except UnicodeError:
        problem = (f"the user name or the password in ${smtp.password_env} has characters "
                   "this server's login cannot carry (only ASCII)")
    except smtplib.SMTPNotSupportedError as exc:
        problem = f"{exc}; check [smtp].security"
    except ssl.SSLError as exc:
        problem = (f"TLS failed ({exc.reason or exc}); check [smtp].security (ssl, starttls "
                   "or none) and [smtp].ca_file")
    except BaseException:
        if client is not None:
            _close(client)
        raise
    if client is not None:
        _close(client)
    raise DeliveryError(f"{_where(smtp)}: {problem}")


def _close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _wire(raw: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, the final dot line."""
    body = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", raw))
    return body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def _send_one(client: smtplib.SMTP, smtp: SmtpConfig, d: Delivery) -> None:
    """MAIL, RCPT, DATA by hand, so we know how far a failure got."""
    data_sent = False
    try:
        options = [f"SIZE={len(d.raw)}"] if client.has_extn("size") else []
        steps: tuple[tuple[str, Callable[[], tuple[int, bytes]], tuple[int, ...]], ...] = (
            ("mail", lambda: client.mail(smtp.sender, options), (250,)),
            ("rcpt", lambda: client.rcpt(d.recipient), (250, 251)),
            ("data", lambda: client.docmd("DATA"), (354,)))
        for step, command, ok in steps:  # one at a time: stop at the first refusal
            code, message = command()
            if code not in ok:
                raise _Refused(code, _reply(code, message), step)
        data_sent = True
        client.send(_wire(d.raw))
        code, message = client.getreply()
        if code != 250:
            raise _Refused(code, _reply(code, message), "end")
    except _Refused:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.rset()  # clear the half-made transaction for the next message
        raise
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise _Lost(f"connection lost: {exc or type(exc).__name__}", data_sent) from None
    except UnicodeEncodeError:
        raise _Refused(553, "553 the address has characters SMTP cannot carry here "
                            "(only ASCII)", "rcpt") from None


def deliver(store: Store, smtp: SmtpConfig, now: Clock, *, due_only: bool = True,
            allowed: Collection[str] | None = None,
            progress: Callable[[str], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> SendReport:
    """Send what is pending over one connection; mark each message as its fate is known.

    Messages of subscribers not in ``allowed`` (removed from the config, or mail turned
    off) are cancelled, not sent.
    """
    report = SendReport()
    say = progress or (lambda _line: None)
    todo = []
    for d in store.deliveries(("pending",)):
        if allowed is not None and d.subscriber not in allowed:
            store.mark_failed(d.id, "cancelled: the subscriber is gone from the config, has "
                                    "no e-mail address, or has mail = false", now())
        elif due_only and d.next_attempt_at > now():
            report.not_due += 1
        else:
            todo.append(d)
    todo.sort(key=lambda d: (d.attempts, d.id))  # a message that keeps failing goes last
    if not todo:
        return report

    def fail(d: Delivery, reason: str, uncertain: bool = False) -> None:
        store.mark_failed(d.id, reason, now(), uncertain)
        report.failed.append((d.message_id, reason))
        say(f"failed {d.subscriber} issue {d.issue}: {reason}")

    def retry(d: Delivery, reason: str, uncertain: bool = False) -> None:
        at = now()
        if uncertain and _give_up(d, at):
            fail(d, f"gave up after {d.uncertain + 1} tries the server never confirmed, the "
                    f"first {_hours(at - (d.uncertain_since or at))} ago (it may have "
                    f"delivered the message; unconfirmed tries stop after "
                    f"{_hours(UNCERTAIN_WINDOW)}): {reason}", uncertain=True)
            return
        store.mark_retry(d.id, reason, at + backoff(d.attempts + 1), at if uncertain else None)
        report.retrying.append((d.message_id, reason))
        say(f"will retry {d.subscriber} issue {d.issue}: {reason}")

    interval = 60.0 / smtp.max_per_minute if smtp.max_per_minute else 0.0
    last = 0.0
    client: smtplib.SMTP | None = None
    losses = 0
    try:
        for n, d in enumerate(todo, 1):
            if client is None:
                try:
                    client = connect(smtp)
                except smtplib.SMTPResponseException as exc:  # a busy greeting (421, 554)
                    reason = f"{_where(smtp)} answered {_reply(exc.smtp_code, exc.smtp_error)}"
                    for rest in todo[n - 1:]:
                        retry(rest, reason)
                    break
                except (OSError, smtplib.SMTPException) as exc:
                    for rest in todo[n - 1:]:
                        retry(rest, f"cannot connect to {_where(smtp)}: {exc}")
                    break
            if interval:
                wait = last + interval - time.monotonic()
                if wait > 0:
                    sleep(wait)
                last = time.monotonic()
            if not store.is_pending(d.id):  # unsubscribed (e.g. on the web) since we read it
                report.cancelled.append(d.message_id)
                say(f"not sent {d.subscriber} issue {d.issue}: cancelled meanwhile")
                continue
            try:
                _send_one(client, smtp, d)
            except _Refused as exc:
                if exc.code in (530, 535) or (exc.step == "mail" and exc.code >= 500
                                              and exc.code != 552):
                    raise DeliveryError(f"{_where(smtp)} refuses to send for us ({exc}); check "
                                        "[smtp].from, [smtp].username and the password"
                                        ) from None
                if exc.code >= 500:
                    fail(d, str(exc))
                else:
                    retry(d, str(exc))
                if exc.closing:
                    _close(client)
                    client = None
                continue
            except _Lost as exc:
                retry(d, str(exc), exc.uncertain)
                client.close()
                client = None
                losses += 1
                if losses >= MAX_RECONNECTS:
                    break  # the server keeps dropping us: the rest wait for the next pass
                continue
            losses = 0
            checkpoint("send:after-accept")
            store.mark_sent(d.id, now())
            report.sent.append(d.message_id)
            say(f"sent {n}/{len(todo)}: {d.subscriber} issue {d.issue}")
    finally:
        if client is not None:
            _close(client)
    return report
