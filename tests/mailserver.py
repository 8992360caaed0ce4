"""A real SMTP server on 127.0.0.1 (aiosmtpd) whose replies tests can script."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Script:
    """What the server answers. Each list is consumed one reply per command."""

    rcpt: dict[str, list[str]] = field(default_factory=dict)  # address -> replies
    mail: list[str] = field(default_factory=list)  # replies to MAIL FROM, one per message
    drop_for: set[str] = field(default_factory=set)  # always hang up on these recipients' data
    data: list[str] = field(default_factory=list)  # "drop" closes the connection mid-DATA,
    # "stall" answers only after the client has given up (and then refuses the message)


class Recorder:
    """Keeps every accepted message; answers as the script says."""

    def __init__(self) -> None:
        self.script = Script()
        self.received: list[bytes] = []
        self.recipients: list[list[str]] = []

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.script.mail:
            return self.script.mail.pop(0)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        replies = self.script.rcpt.get(address)
        if replies:
            return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.script.drop_for & set(envelope.rcpt_tos):
            assert server.transport is not None
            server.transport.close()
            return "250 never seen by the client"
        if self.script.data:
            reply = self.script.data.pop(0)
            if reply == "drop":
                assert server.transport is not None
                server.transport.close()
                return "250 never seen by the client"
            if reply == "stall":
                await asyncio.sleep(1.5)
                return "451 too late"
            return reply
        self.received.append(bytes(envelope.content or b""))  # type: ignore[arg-type]
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(raw, policy=policy.default)  # type: ignore[misc]
                for raw in self.received]


class Server:
    """Start/stop wrapper: plain, or STARTTLS + AUTH with a test certificate."""

    def __init__(self, *, tls: ssl.SSLContext | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.recorder = Recorder()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs.update(tls_context=tls, require_starttls=True)
        if users is not None:
            def authenticate(server: SMTP, session: Session, envelope: Envelope,
                             mechanism: str, auth_data: Any) -> AuthResult:
                ok = (isinstance(auth_data, LoginPassword) and
                      users.get(auth_data.login.decode()) == auth_data.password.decode())
                return AuthResult(success=ok, handled=False)
            kwargs.update(authenticator=authenticate, auth_required=True,
                          auth_require_tls=tls is not None)
        self.kwargs = kwargs
        self.controller: Controller | None = None

    def start(self) -> Server:
        """Listen (again) on the same port with the same recorder."""
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port,
                                     **self.kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


# The deployment the mail tests share: three readers, one without an address.
SUBSCRIBERS = """
[[subscribers]]
name = "ana"
email = "ana@example.org"
keywords = ["CLIP", "data curation", { term = "medical", weight = 2 }]

[[subscribers]]
name = "bo"
email = "bo@example.org"
keywords = ["video", "diffusion"]

[[subscribers]]
name = "cy"
keywords = ["graph"]
"""


def smtp_table(port: int, extra: str = "") -> str:
    return (f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            f'from = "digest@example.org"\nunsubscribe_mailto = "leave@example.org"\n{extra}\n')
