"""Delivering the outbox over SMTP: one connection, each message marked sent on acceptance.

Outcomes per message (FIELD-NOTES E13):
* 250: marked sent at once, in its own commit. A crash between the server's acceptance and
  that commit is the only way a message goes twice, and then with the same Message-ID.
* 4xx, a timeout, a refused or dropped connection: stays pending, retried later (the first
  retry on the next run, then after 1, 2, 4 ... minutes, at most 6 hours apart).
* 5xx for the recipient or the data: failed, with the server's reply.
* Authentication or TLS failure: DeliveryError, nothing marked.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .config import SmtpConfig
from .errors import DeliveryError
from .faults import checkpoint
from .store import Delivery, Store

Clock = Callable[[], datetime]
MAX_BACKOFF = timedelta(hours=6)


@dataclass(slots=True)
class SendReport:
    """What a delivery pass did."""

    sent: list[str] = field(default_factory=list)
    retrying: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_due: int = 0


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed tries: 0, then 1, 2, 4 ... min."""
    if attempts <= 1:
        return timedelta(0)
    return min(timedelta(minutes=2 ** (attempts - 2)), MAX_BACKOFF)


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def connect(smtp: SmtpConfig) -> smtplib.SMTP:
    """Open, secure and authenticate one SMTP connection."""
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    client: smtplib.SMTP
    if smtp.security == "ssl":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    try:
        client.ehlo()
        if smtp.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        password = smtp.password()
        if smtp.username and password is not None:
            client.login(smtp.username, password.reveal())
    except smtplib.SMTPAuthenticationError as exc:
        _close(client)
        raise DeliveryError(f"{smtp.host}:{smtp.port}: authentication failed for user "
                            f"{smtp.username!r} ({_reply(exc.smtp_code, exc.smtp_error)}); "
                            f"check [smtp].username and ${smtp.password_env}") from None
    except smtplib.SMTPNotSupportedError as exc:
        _close(client)
        raise DeliveryError(f"{smtp.host}:{smtp.port}: {exc}; check [smtp].security") from None
    except ssl.SSLError as exc:
        _close(client)
        raise DeliveryError(f"{smtp.host}:{smtp.port}: TLS failed ({exc.reason}); check "
                            "[smtp].security and [smtp].ca_file") from None
    except BaseException:
        _close(client)
        raise
    return client


def _close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def deliver(store: Store, smtp: SmtpConfig, now: Clock, *, due_only: bool = True,
            progress: Callable[[str], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> SendReport:
    """Send what is pending over one connection; mark each message as its fate is known."""
    report = SendReport()
    pending = store.deliveries(("pending",))
    todo = [d for d in pending if not due_only or d.next_attempt_at <= now()]
    report.not_due = len(pending) - len(todo)
    if not todo:
        return report
    say = progress or (lambda _line: None)

    def retry(d: Delivery, error: str) -> None:
        store.mark_retry(d.id, error, now() + backoff(d.attempts + 1))
        report.retrying.append((d.message_id, error))
        say(f"will retry {d.subscriber} issue {d.issue}: {error}")

    try:
        client = connect(smtp)
    except (OSError, smtplib.SMTPException) as exc:
        error = f"cannot connect to {smtp.host}:{smtp.port}: {exc}"
        for d in todo:
            retry(d, error)
        return report
    interval = 60.0 / smtp.max_per_minute if smtp.max_per_minute else 0.0
    last = 0.0
    try:
        for n, d in enumerate(todo, 1):
            if interval:
                wait = last + interval - time.monotonic()
                if wait > 0:
                    sleep(wait)
                last = time.monotonic()
            try:
                client.sendmail(smtp.sender, [d.recipient], d.raw)
            except smtplib.SMTPRecipientsRefused as exc:
                code, message = exc.recipients.get(d.recipient, (550, b"refused"))
                if code >= 500:
                    store.mark_failed(d.id, _reply(code, message))
                    report.failed.append((d.message_id, _reply(code, message)))
                    say(f"failed {d.subscriber} issue {d.issue}: {_reply(code, message)}")
                else:
                    retry(d, _reply(code, message))
                continue
            except smtplib.SMTPResponseException as exc:  # MAIL FROM or DATA answered
                reply = _reply(exc.smtp_code, exc.smtp_error)
                if exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPSenderRefused):
                    store.mark_failed(d.id, reply)
                    report.failed.append((d.message_id, reply))
                    say(f"failed {d.subscriber} issue {d.issue}: {reply}")
                else:
                    retry(d, reply)
                if exc.smtp_code == 421 or isinstance(exc, smtplib.SMTPSenderRefused):
                    break  # the server is closing, or refuses our sender: stop this pass
                continue
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                retry(d, f"connection lost: {exc or type(exc).__name__}")
                break  # the connection is gone: the rest wait for the next pass
            checkpoint("send:after-accept")
            store.mark_sent(d.id, now())
            report.sent.append(d.message_id)
            say(f"sent {n}/{len(todo)}: {d.subscriber} issue {d.issue}")
    finally:
        _close(client)
    return report
