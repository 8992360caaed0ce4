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

Several senders may work on one outbox at once (``deliver_parallel``, more processes, other
hosts sharing a PostgreSQL store): each claims ``CLAIM_BATCH`` messages at a time for
``LEASE``, renewed right before each message, so no two send the same one. A sender that
dies leaves its claims until the lease ends; then another takes them over, and a message
the dead one had handed to the server but not marked sent goes again, with its Message-ID
(the crash window above). ``max_per_minute`` holds for all of them together: each send
waits for a slot the store hands out (``Store.pace``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import smtplib
import socket
import ssl
import threading
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
CLAIM_BATCH = 10  # messages a sender claims at a time
LEASE = timedelta(minutes=10)  # how long a claim holds (renewed before each message)


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


def worker_name(n: int = 0) -> str:
    """A worker's name in the claims (a sender's, or a digest maker's in ``run --workers``):
    unique to this host, process, pass and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}:{n}"


@dataclass(slots=True)
class _Pass:
    """What the workers of one delivery pass share."""

    smtp: SmtpConfig
    now: Clock
    due_only: bool
    allowed: Collection[str] | None
    say: Callable[[str], None]
    sleep: Callable[[float], None]
    tried_upto: int  # tries marked after this one were made by senders working now
    total: int  # messages to send when the pass began (for the progress lines)
    batch: int = CLAIM_BATCH  # messages a worker claims at a time
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    done: int = 0

    @classmethod
    def begin(cls, store: Store, smtp: SmtpConfig, now: Clock, due_only: bool,
              allowed: Collection[str] | None, progress: Callable[[str], None] | None,
              sleep: Callable[[float], None], report: SendReport) -> _Pass:
        """Cancel the mail of subscribers not ``allowed``, count what waits, mark the start."""
        if allowed is not None:
            store.cancel_pending(allowed, _CANCELLED, now())
        pending, not_due = store.pending_counts(now())
        if due_only:
            report.not_due = not_due
        lock = threading.Lock()
        say = progress or (lambda _line: None)

        def said(line: str) -> None:
            with lock:
                say(line)

        return cls(smtp, now, due_only, allowed, said, sleep, store.tries(),
                   pending - not_due if due_only else pending)

    def nap(self, seconds: float) -> None:
        """Wait for a send slot; with the real clock, a pass told to stop wakes at once."""
        if self.sleep is time.sleep:
            self.stop.wait(seconds)
        else:
            self.sleep(seconds)

    def counted(self) -> int:
        with self.lock:
            self.done += 1
            return self.done


_CANCELLED = ("cancelled: the subscriber is gone from the config, has no e-mail address, or "
              "has mail = false")


class _Worker:
    """One sender: its own store connection and SMTP connection; claims a few messages at a
    time until nothing is left to claim (or the pass stops), marking each as its fate is
    known."""

    def __init__(self, store: Store, p: _Pass, name: str) -> None:
        self.store = store
        self.p = p
        self.name = name
        self.report = SendReport()
        self.unreachable: str | None = None  # why the server could not be reached
        self.client: smtplib.SMTP | None = None

    def fail(self, d: Delivery, reason: str, uncertain: bool = False) -> None:
        self.store.mark_failed(d.id, reason, self.p.now(), uncertain)
        self.report.failed.append((d.message_id, reason))
        self.p.say(f"failed {d.subscriber} issue {d.issue}: {reason}")

    def retry(self, d: Delivery, reason: str, uncertain: bool = False) -> None:
        at = self.p.now()
        if uncertain and _give_up(d, at):
            self.fail(d, f"gave up after {d.uncertain + 1} tries the server never confirmed, "
                         f"the first {_hours(at - (d.uncertain_since or at))} ago (it may have "
                         f"delivered the message; unconfirmed tries stop after "
                         f"{_hours(UNCERTAIN_WINDOW)}): {reason}", uncertain=True)
            return
        self.store.mark_retry(d.id, reason, at + backoff(d.attempts + 1),
                              at if uncertain else None)
        self.report.retrying.append((d.message_id, reason))
        self.p.say(f"will retry {d.subscriber} issue {d.issue}: {reason}")

    def run(self) -> SendReport:
        try:
            self._run()
        except BaseException:
            with contextlib.suppress(Exception):
                self._stop()
            raise
        self._stop()
        return self.report

    def _stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            _close(client)
        self.store.release(self.name)  # what it holds and never tried: free for the next

    def _run(self) -> None:
        p = self.p
        losses = 0
        while not p.stop.is_set():
            batch = self.store.claim(self.name, p.batch, LEASE, p.now(), p.due_only,
                                     tried_upto=p.tried_upto)
            if not batch:
                return
            for d in batch:
                if p.stop.is_set():
                    return
                if p.allowed is not None and d.subscriber not in p.allowed:
                    self.store.mark_failed(d.id, _CANCELLED, p.now())  # queued meanwhile
                    continue
                if self.client is None and not self._connect():
                    return  # the pass retries the rest (``sweep``)
                assert self.client is not None
                outcome = self._one(self.client, d)
                if outcome == "lost":
                    losses += 1
                    if losses >= MAX_RECONNECTS:
                        return  # the server keeps dropping us: the rest wait for the next pass
                elif outcome == "sent":
                    losses = 0

    def _connect(self) -> bool:
        smtp = self.p.smtp
        try:
            self.client = connect(smtp)
            return True
        except smtplib.SMTPResponseException as exc:  # a busy greeting (421, 554)
            self.unreachable = f"{_where(smtp)} answered {_reply(exc.smtp_code, exc.smtp_error)}"
        except (OSError, smtplib.SMTPException) as exc:
            self.unreachable = f"cannot connect to {_where(smtp)}: {exc}"
        return False

    def _one(self, client: smtplib.SMTP, d: Delivery) -> str:
        """Send one claimed message: "sent", "lost" (the connection), or what else."""
        p, smtp, store = self.p, self.p.smtp, self.store
        if smtp.max_per_minute:
            slot = store.pace(60.0 / smtp.max_per_minute, time.time())
            wait = slot - time.time()
            if wait > 0:
                p.nap(wait)
            if p.stop.is_set():
                return "stopped"
        if not store.is_pending(d.id):  # unsubscribed (e.g. on the web) since we read it
            self.report.cancelled.append(d.message_id)
            p.say(f"not sent {d.subscriber} issue {d.issue}: cancelled meanwhile")
            return "cancelled"
        if not store.renew(d.id, self.name, p.now() + LEASE):  # our lease ran out: theirs now
            p.say(f"not sent {d.subscriber} issue {d.issue}: another sender took it over")
            return "taken"
        try:
            _send_one(client, smtp, d)
        except _Refused as exc:
            if exc.code in (530, 535) or (exc.step == "mail" and exc.code >= 500
                                          and exc.code != 552):
                raise DeliveryError(f"{_where(smtp)} refuses to send for us ({exc}); check "
                                    "[smtp].from, [smtp].username and the password") from None
            if exc.code >= 500:
                self.fail(d, str(exc))
            else:
                self.retry(d, str(exc))
            if exc.closing:
                _close(client)
                self.client = None
            return "refused"
        except _Lost as exc:
            self.retry(d, str(exc), exc.uncertain)
            client.close()
            self.client = None
            return "lost"
        checkpoint("send:after-accept")
        store.mark_sent(d.id, p.now())
        self.report.sent.append(d.message_id)
        p.say(f"sent {p.counted()}/{p.total}: {d.subscriber} issue {d.issue}")
        return "sent"


def _sweep(store: Store, p: _Pass, reason: str, report: SendReport) -> None:
    """The server could not be reached: what is still to send this pass is retried later,
    with that reason (nothing another sender holds)."""
    sweeper = _Worker(store, p, worker_name(-1))
    try:
        while batch := store.claim(sweeper.name, CLAIM_BATCH, LEASE, p.now(), p.due_only,
                                   tried_upto=p.tried_upto):
            for d in batch:
                sweeper.retry(d, reason)
    finally:
        store.release(sweeper.name)
    report.retrying.extend(sweeper.report.retrying)


def _merge(into: SendReport, parts: Collection[SendReport]) -> SendReport:
    for part in parts:
        into.sent.extend(part.sent)
        into.retrying.extend(part.retrying)
        into.failed.extend(part.failed)
        into.cancelled.extend(part.cancelled)
    return into


def deliver(store: Store, smtp: SmtpConfig, now: Clock, *, due_only: bool = True,
            allowed: Collection[str] | None = None,
            progress: Callable[[str], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> SendReport:
    """Send what is pending over one connection; mark each message as its fate is known.

    Messages of subscribers not in ``allowed`` (removed from the config, or mail turned
    off) are cancelled, not sent. Messages are claimed ``CLAIM_BATCH`` at a time for
    ``LEASE``, so other senders (``deliver_parallel``, other processes and hosts) may work
    on the same outbox at once; ``[smtp].max_per_minute`` is kept by the store
    (``Store.pace``) for all of them together.
    """
    report = SendReport()
    p = _Pass.begin(store, smtp, now, due_only, allowed, progress, sleep, report)
    worker = _Worker(store, p, worker_name())
    _merge(report, [worker.run()])
    if worker.unreachable is not None:
        _sweep(store, p, worker.unreachable, report)
    return report


def deliver_parallel(open_store: Callable[[], Store], smtp: SmtpConfig, now: Clock,
                     workers: int, *, store: Store | None = None, due_only: bool = True,
                     allowed: Collection[str] | None = None,
                     progress: Callable[[str], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> SendReport:
    """``deliver`` over ``workers`` SMTP connections at once, each in its own thread with its
    own store connection (``open_store()``; ``store``, if given, is the first worker's and
    stays open), each claiming until nothing is left; their reports merged.

    A refusal to send for us (DeliveryError) or any other error in one worker stops the
    others after the message in hand, and is raised when all have stopped.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    own = store is None
    first = open_store() if store is None else store
    try:
        report = SendReport()
        p = _Pass.begin(first, smtp, now, due_only, allowed, progress, sleep, report)
        p.batch = max(1, min(CLAIM_BATCH, -(-p.total // workers)))  # a share for each
        results: list[_Worker | None] = [None] * workers
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                mine = first if n == 0 else open_store()
                try:
                    worker = results[n] = _Worker(mine, p, worker_name(n))
                    worker.run()
                finally:
                    if mine is not first:
                        mine.close()
            except BaseException as exc:  # raised again below, once every worker stopped
                p.stop.set()
                with p.lock:
                    errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,), name=f"digest-send-{n}",
                                    daemon=True) for n in range(1, workers)]
        for thread in threads:
            thread.start()
        work(0)  # the first in this thread: its store connection was opened here
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        done = [w for w in results if w is not None]
        _merge(report, [w.report for w in done])
        reason = next((w.unreachable for w in done if w.unreachable is not None), None)
        if reason is not None:
            _sweep(first, p, reason, report)
        return report
    finally:
        if own:
            first.close()
