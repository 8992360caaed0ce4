"""E-mail delivery over real SMTP (aiosmtpd on 127.0.0.1): messages, outbox, failures."""

from __future__ import annotations

import os
import re
import stat
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import DATA, Clock, Project, dated, tree_state
from mailserver import SUBSCRIBERS, Server, smtp_table
from test_output import dangers

from digest.cli import main
from digest.errors import ConfigError, DeliveryError
from digest.faults import InjectedFault
from digest.pipeline import run, send_pending
from digest.store import Store
from digest.tokens import verify


def by_recipient(server: Server) -> dict[str, EmailMessage]:
    return {str(m["To"].addresses[0].addr_spec): m for m in server.recorder.messages()}


def outbox(project: Project) -> list[tuple[str, int, str, int]]:
    store = Store.open(project.config().store_path)
    try:
        rows = store.conn.execute("SELECT o.subscriber, i.number, o.status, o.attempts FROM"
                                  " outbox o JOIN issues i ON i.id = o.issue_id ORDER BY o.id")
        return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        store.close()


def test_each_subscriber_gets_a_well_formed_newsletter(mailing: Project, server: Server,
                                                       clock: Clock,
                                                       shared_dumps: list[Path]) -> None:
    dated(mailing.drop(shared_dumps[1]))
    report = run(mailing.config(), now=clock)
    assert report.delivery is not None and len(report.delivery.sent) == 2
    got = by_recipient(server)
    assert set(got) == {"ana@example.org", "bo@example.org"}  # cy has no address
    ana, bo = got["ana@example.org"], got["bo@example.org"]
    for msg, name in ((ana, "ana"), (bo, "bo")):
        assert msg.get_content_type() == "multipart/alternative"
        plain, html = msg.get_payload()  # type: ignore[misc]
        assert (plain.get_content_type(), html.get_content_type()) == ("text/plain",
                                                                       "text/html")
        assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
        assert str(msg["From"]) == "Test digest <digest@example.org>"
        assert str(msg["Date"]) == "Mon, 23 Nov 2026 08:00:00 +0000"
        assert re.fullmatch(r"<digest\.1\.[0-9a-f]{16}@example\.org>", str(msg["Message-ID"]))
        assert str(msg["List-Id"]) == "Test digest <digest.digest.example.org>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
        assert https.startswith("https://digest.example.org/unsubscribe?")
        assert mailto == f"mailto:leave@example.org?subject=unsubscribe%20{name}"
        query = parse_qs(urlsplit(https).query)
        secret = (mailing.root / "data" / "secret").read_bytes().strip()
        assert query["u"] == [name] and verify(secret, "unsubscribe", name, query["t"][0])
        assert not verify(secret, "unsubscribe", "someone-else", query["t"][0])
        body = html.get_content()
        assert re.search(r'<h1 style="[^"]*font-size: 22px', body)  # CSS inlined
        assert "@media (prefers-color-scheme: dark)" in body  # kept for dark mode
        assert dangers(body.split("<body", 1)[1]) == []
        assert "<link" not in body.split("<body", 1)[0].replace(
            '<link rel="alternate" type="application/atom+xml"', "")
        assert body.count(https.replace("&", "&amp;")) == 2  # near the top and at the bottom
        assert len(body.encode()) < 102_000  # Gmail clips larger HTML
        assert https.replace("&", "&amp;") in body[:10_000]  # unsubscribe before any clip
        text = plain.get_content()
        assert text.startswith("# Test digest: 35 new papers for " + name)
        assert "Unsubscribe: <https://digest.example.org/unsubscribe?" in text
    assert str(ana["Subject"]).startswith("Test digest: 35 new papers, ")
    assert "CLIP" in str(ana["Subject"]) and "video" in str(bo["Subject"])
    assert ana.get_payload()[0].get_content() != bo.get_payload()[0].get_content()  # type: ignore[index]
    mode = stat.S_IMODE(os.stat(mailing.root / "data" / "secret").st_mode)
    assert mode == 0o600


def test_a_second_run_with_nothing_new_sends_nothing(mailing: Project, server: Server,
                                                     clock: Clock,
                                                     shared_dumps: list[Path]) -> None:
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock)
    clock.tick()
    report = run(mailing.config(), now=clock)
    assert report.delivery is not None and report.delivery.sent == []
    assert len(server.recorder.received) == 2


def test_hostile_titles_are_inert_in_the_mail(mailing: Project, server: Server,
                                              clock: Clock) -> None:
    mailing.write_config("[[subscribers]]\nname = \"x\"\nemail = \"x@example.org\"\n",
                         extra=smtp_table(server.port))
    dated(mailing.drop(DATA / "hostile.txt"))
    run(mailing.config(), now=clock)
    (msg,) = server.recorder.messages()
    html = msg.get_payload()[1].get_content()  # type: ignore[index]
    assert dangers(html.split("<body", 1)[1]) == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\r" not in str(msg["Subject"]) and "\n" not in str(msg["Subject"])


@pytest.mark.parametrize("failure", ["refused", "421", "451-rcpt", "451-data", "drop",
                                     "timeout"])
def test_transient_failures_retry_on_the_next_run_without_loss_or_duplicate(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        failure: str) -> None:
    script = server.recorder.script
    if failure == "refused":
        server.stop()
    elif failure == "421":
        script.rcpt["ana@example.org"] = ["421 Service not available, closing"]
    elif failure == "451-rcpt":
        script.rcpt["ana@example.org"] = ["451 Greylisted, try later"]
    elif failure == "451-data":
        script.data = ["451 Local error, try later"]
    elif failure == "drop":
        script.data = ["drop"]
    else:
        script.data = ["stall"]
        mailing.write_config(SUBSCRIBERS, extra=smtp_table(server.port, "timeout = 0.5"))
    dated(mailing.drop(shared_dumps[1]))
    report = run(mailing.config(), now=clock)
    assert report.delivery is not None and report.delivery.retrying
    assert ("ana", 1, "pending", 1) in outbox(mailing)
    if failure == "refused":
        server.start()
    clock.tick(0.01)  # the first retry is due on the very next run
    report = run(mailing.config(), now=clock)
    clock.tick(1)
    run(mailing.config(), now=clock)
    assert [r[2] for r in outbox(mailing)] == ["sent", "sent"]
    ids = [str(m["Message-ID"]) for m in server.recorder.messages()]
    assert sorted(str(m["To"]) for m in server.recorder.messages()) == [
        "ana <ana@example.org>", "bo <bo@example.org>"]
    assert len(ids) == len(set(ids)) == 2


def test_a_permanent_failure_marks_that_delivery_failed_and_the_rest_go_on(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    server.recorder.script.rcpt["ana@example.org"] = ["550 5.1.1 No such user here"]
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock)
    assert outbox(mailing) == [("ana", 1, "failed", 1), ("bo", 1, "sent", 1)]
    assert list(by_recipient(server)) == ["bo@example.org"]
    clock.tick(24)
    run(mailing.config(), now=clock)
    assert len(server.recorder.received) == 1  # failed is final: not retried
    assert main(["status", "--config", str(mailing.config_path)]) == 0
    out = capsys.readouterr().out
    assert "e-mail: 0 pending, 1 failed" in out
    assert ("failed   ana issue 1 to ana@example.org (1 attempt(s)): 550 5.1.1 No such user"
            " here") in out


def test_a_crash_after_rendering_delivers_on_the_next_run_once(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    dated(mailing.drop(shared_dumps[1]))
    monkeypatch.setenv("DIGEST_FAULT", "run:before-send")
    with pytest.raises(InjectedFault):
        run(mailing.config(), now=clock)
    assert server.recorder.received == []
    assert [r[2] for r in outbox(mailing)] == ["pending", "pending"]
    monkeypatch.delenv("DIGEST_FAULT")
    run(mailing.config(), now=clock)
    run(mailing.config(), now=clock)
    assert len(server.recorder.received) == 2


def test_the_only_duplicate_window_repeats_the_message_id(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    dated(mailing.drop(shared_dumps[1]))
    monkeypatch.setenv("DIGEST_FAULT", "send:after-accept")
    with pytest.raises(InjectedFault):  # accepted by the server, not yet marked sent
        run(mailing.config(), now=clock)
    monkeypatch.delenv("DIGEST_FAULT")
    run(mailing.config(), now=clock)
    ids = [str(m["Message-ID"]) for m in server.recorder.messages()]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]
    assert [r[2] for r in outbox(mailing)] == ["sent", "sent"]


def test_starttls_and_auth(project: Project, clock: Clock, tmp_path: Path,
                           shared_dumps: list[Path], monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secure = Server(tls=context, users={"digest": "s3cret-Sentinel-42"}).start()
    try:
        project.write_config(SUBSCRIBERS, extra=smtp_table(
            secure.port, f'username = "digest"\npassword_env = "DIGEST_TEST_SMTP_PASSWORD"\n'
                         f'ca_file = "{ca_file}"').replace('security = "none"',
                                                           'security = "starttls"'))
        dated(project.drop(shared_dumps[1]))
        monkeypatch.setenv("DIGEST_TEST_SMTP_PASSWORD", "wrong-Sentinel-99")
        with pytest.raises(DeliveryError, match="authentication failed for user 'digest'"):
            run(project.config(), now=clock)
        assert main(["send", "--config", str(project.config_path)]) == 1
        out, err = capsys.readouterr()
        assert "authentication failed" in err and "Sentinel" not in out + err
        assert outbox(project) == [("ana", 1, "pending", 0), ("bo", 1, "pending", 0)]
        monkeypatch.setenv("DIGEST_TEST_SMTP_PASSWORD", "s3cret-Sentinel-42")
        report = run(project.config(), now=clock)
        assert report.delivery is not None and len(report.delivery.sent) == 2
        assert len(secure.recorder.received) == 2
        for path in (project.root / "data").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert b"Sentinel" not in data, path
    finally:
        secure.stop()


def test_the_password_must_be_in_the_environment_before_anything_runs(
        mailing: Project, server: Server, capsys: pytest.CaptureFixture[str],
        shared_dumps: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    mailing.write_config(SUBSCRIBERS, extra=smtp_table(
        server.port, 'username = "u"\npassword_env = "DIGEST_NOT_SET_ANYWHERE"'))
    monkeypatch.delenv("DIGEST_NOT_SET_ANYWHERE", raising=False)
    dated(mailing.drop(shared_dumps[1]))
    code = main(["run", "--config", str(mailing.config_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "[smtp].password_env: the environment variable DIGEST_NOT_SET_ANYWHERE is not set" in err
    assert not (mailing.root / "data").exists()


def test_config_refuses_a_password_in_the_file(tmp_path: Path) -> None:
    from digest.config import load_config

    path = tmp_path / "config.toml"
    path.write_text('[smtp]\nhost = "h"\nfrom = "a@b.org"\npassword = "hunter2"\n'
                    'security = "startls"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "[smtp].password: never put the password in the config file" in text
    assert "did you mean 'starttls'?" in text and "hunter2" not in text


def test_dry_run_and_preview_write_eml_files(mailing: Project, server: Server, clock: Clock,
                                             shared_dumps: list[Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    dated(mailing.drop(shared_dumps[1]))
    before = tree_state(mailing.root)
    assert main(["preview", "--config", str(mailing.config_path), "--subscriber", "ana",
                 "--format", "eml"]) == 0
    eml = Path(capsys.readouterr().out.strip())
    try:
        from email import message_from_bytes, policy
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert msg["To"].addresses[0].addr_spec == "ana@example.org"  # type: ignore[attr-defined]
    finally:
        eml.unlink()
    assert tree_state(mailing.root) == before
    run(mailing.config(), now=clock, send=False)
    report, written = send_pending(mailing.config(), now=clock, dry_run=True)
    assert sorted(p.name for p in written) == ["ana-0001.eml", "bo-0001.eml"]
    assert server.recorder.received == [] and report.sent == []
    assert [r[2] for r in outbox(mailing)] == ["pending", "pending"]
    assert main(["send", "--config", str(mailing.config_path)]) == 0
    assert len(server.recorder.received) == 2
    assert written[0].read_bytes() == server.recorder.received[0].replace(b"\r\n", b"\n") or \
        written[0].read_bytes().replace(b"\r\n", b"\n") in [
            r.replace(b"\r\n", b"\n") for r in server.recorder.received]


def test_unsubscribe_stops_mail_and_keeps_history(mailing: Project, server: Server,
                                                  clock: Clock, shared_dumps: list[Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dated(mailing.drop(shared_dumps[0]))
    run(mailing.config(), now=clock)
    assert main(["unsubscribe", "ANA@example.org", "--config", str(mailing.config_path)]) == 0
    dated(mailing.drop(shared_dumps[1]))
    clock.tick()
    report = run(mailing.config(), now=clock)
    assert [d["subscriber"] for d in report.digests] == ["ana", "bo", "cy"]  # still digested
    assert sorted(r[0] for r in outbox(mailing)) == ["ana", "bo", "bo"]
    assert main(["subscribe", "ana@example.org", "--config", str(mailing.config_path)]) == 0
    assert main(["unsubscribe", "nobody@example.org", "--config",
                 str(mailing.config_path)]) == 2
    capsys.readouterr()
    assert main(["status", "--config", str(mailing.config_path), "--json"]) == 0
    import json
    subs = {s["name"]: s for s in json.loads(capsys.readouterr().out)["subscribers"]}
    assert subs["ana"]["mail"] == "on" and subs["ana"]["last_issue"] == 2
    assert subs["cy"]["mail"] == "off"


def test_rate_limit_spaces_messages(mailing: Project, server: Server, clock: Clock,
                                    shared_dumps: list[Path]) -> None:
    from digest.send import deliver

    mailing.write_config(SUBSCRIBERS, extra=smtp_table(server.port, "max_per_minute = 30"))
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock, send=False)
    naps: list[float] = []
    config = mailing.config()
    assert config.smtp is not None
    store = Store.open(config.store_path)
    try:
        report = deliver(store, config.smtp, clock, sleep=naps.append)
    finally:
        store.close()
    assert len(report.sent) == 2
    assert len(naps) == 1 and 1.9 < naps[0] <= 2.0  # 30 a minute: two seconds apart


def test_headers_are_never_folded(mailing: Project, server: Server, clock: Clock,
                                  shared_dumps: list[Path]) -> None:
    mailing.write_config(SUBSCRIBERS.replace('["video", "diffusion"]',
                                             '["video generation", "diffusion models", '
                                             '"vision transformer", "knowledge distillation"]'),
                         extra=smtp_table(server.port))
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock)
    for raw in server.recorder.received:
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"\r\n[ \t]", head), head  # no continuation lines
        assert max(map(len, head.split(b"\r\n"))) > 78  # long ones stayed whole


def test_a_message_the_server_always_drops_never_holds_up_the_others(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    server.recorder.script.drop_for = {"ana@example.org"}
    for path in shared_dumps[:3]:
        dated(mailing.drop(path))
        run(mailing.config(), now=clock)
        clock.tick(24)
    assert sorted(str(m["To"]) for m in server.recorder.messages()) == [
        "bo <bo@example.org>"] * 3  # bo's mail went out every day
    rows = outbox(mailing)
    assert [r for r in rows if r[0] == "bo"] == [("bo", n, "sent", 1) for n in (1, 2, 3)]
    ana = [r for r in rows if r[0] == "ana"]
    assert ("ana", 1, "failed", 3) in ana  # given up after 3 unconfirmed tries
    store = Store.open(mailing.config().store_path)
    (reason,) = [d.last_error for d in store.deliveries(("failed",))]
    store.close()
    assert reason and reason.startswith("gave up after 3 tries the server never confirmed")


def test_a_message_too_big_fails_alone(mailing: Project, server: Server, clock: Clock,
                                       shared_dumps: list[Path]) -> None:
    server.recorder.script.mail = ["552 5.3.4 Message size exceeds fixed limit"]
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock)
    assert [r[2] for r in outbox(mailing)] == ["failed", "sent"]


@pytest.mark.parametrize("reply", ["530 5.7.0 Authentication required",
                                   "550 5.7.1 Sender rejected"])
def test_the_server_refusing_our_sender_stops_and_marks_nothing(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str], reply: str) -> None:
    server.recorder.script.mail = [reply]
    dated(mailing.drop(shared_dumps[1]))
    assert main(["run", "--config", str(mailing.config_path)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and f"refuses to send for us ({reply})" in errors[0]  # one line
    assert err.splitlines()[-1] == errors[0]  # after the progress lines, and last
    assert outbox(mailing) == [("ana", 1, "pending", 0), ("bo", 1, "pending", 0)]
    assert main(["run", "--config", str(mailing.config_path)]) == 0  # the server relented
    assert [r[2] for r in outbox(mailing)] == ["sent", "sent"]


def test_implicit_tls_to_an_untrusted_server_is_an_error(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    mailing.write_config(SUBSCRIBERS, extra=smtp_table(server.port).replace(
        'security = "none"', 'security = "ssl"'))
    dated(mailing.drop(shared_dumps[1]))
    with pytest.raises(DeliveryError, match="TLS failed"):
        run(mailing.config(), now=clock)
    assert outbox(mailing) == [("ana", 1, "pending", 0), ("bo", 1, "pending", 0)]


def test_mail_turned_off_in_the_config_cancels_what_is_queued(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock, send=False)
    mailing.write_config(SUBSCRIBERS.replace('email = "bo@example.org"',
                                             'email = "bo@example.org"\nmail = false'),
                         extra=smtp_table(server.port))
    run(mailing.config(), now=clock)
    assert [str(m["To"]) for m in server.recorder.messages()] == ["ana <ana@example.org>"]
    assert [r[2] for r in outbox(mailing)] == ["sent", "failed"]


def test_unsubscribe_covers_every_profile_with_that_address(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    mailing.write_config(SUBSCRIBERS.replace("bo@example.org", "ana@example.org"),
                         extra=smtp_table(server.port))
    assert main(["unsubscribe", "ana@example.org", "--config", str(mailing.config_path)]) == 0
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock)
    assert server.recorder.received == [] and outbox(mailing) == []


def test_message_ids_differ_between_stores(project: Project, server: Server, clock: Clock,
                                           shared_dumps: list[Path], tmp_path: Path) -> None:
    ids = []
    for folder in ("one", "two"):
        project.write_config(SUBSCRIBERS, extra=smtp_table(server.port))
        project.config_path.write_text(project.config_path.read_text().replace(
            'data_dir = "data"', f'data_dir = "{folder}"'))
        dated(project.drop(shared_dumps[1]))
        run(project.config(), now=clock)
        ids.append({str(m["Message-ID"]) for m in server.recorder.messages()})
    assert len(ids[0]) == 2 and ids[1] - ids[0] and not (ids[1] - ids[0]) & ids[0]


@pytest.mark.parametrize(("extra", "message"), [
    ('username = "u"', "[smtp].password_env: missing: a user name needs a password"),
    ('ca_file = "config.toml"', "is not a readable PEM file of CA certificates"),
])
def test_smtp_config_problems(mailing: Project, server: Server, extra: str,
                              message: str) -> None:
    from digest.config import load_config

    mailing.write_config(SUBSCRIBERS, extra=smtp_table(server.port, extra))
    with pytest.raises(ConfigError) as info:
        load_config(mailing.config_path)
    assert message in str(info.value)


@pytest.mark.parametrize("address", ["bo..smith@example.org", "a,b@example.org",
                                     "josé@example.org", "ana@bücher.example"])
def test_addresses_smtp_cannot_take_are_config_errors(tmp_path: Path, address: str) -> None:
    from digest.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(f'[[subscribers]]\nname = "x"\nemail = "{address}"\n')
    with pytest.raises(ConfigError, match=r"\[subscribers\]\[0\]\.email"):
        load_config(path)


def test_a_damaged_secret_is_an_error_and_perms_are_tightened(tmp_path: Path) -> None:
    from digest.errors import StoreError
    from digest.tokens import load_secret

    (tmp_path / "secret").write_text("")
    with pytest.raises(StoreError, match="empty or too short; delete the file"):
        load_secret(tmp_path)
    (tmp_path / "secret").write_text("x" * 64)
    os.chmod(tmp_path / "secret", 0o644)
    assert load_secret(tmp_path) == b"x" * 64
    assert stat.S_IMODE(os.stat(tmp_path / "secret").st_mode) == 0o600
    fresh = tmp_path / "fresh"
    assert load_secret(fresh, create=False) is None and not fresh.exists()
    first = load_secret(fresh)
    assert first is not None and len(first) == 64 and load_secret(fresh) == first


@pytest.mark.parametrize("name", ["Papers Digest", "Lesezirkel für Papiere · 论文"])
def test_a_sender_display_name_reaches_the_reader(project: Project, server: Server, clock: Clock,
                                                  name: str) -> None:
    table = smtp_table(server.port).replace('from = "digest@example.org"',
                                            f'from = "{name} <digest@example.org>"')
    project.write_config(SUBSCRIBERS, extra=table)
    config = project.config()
    assert config.smtp is not None
    assert (config.smtp.sender, config.smtp.from_name) == ("digest@example.org", name)
    envelope_from: list[str] = []
    keep = server.recorder.handle_DATA

    async def handle_data(srv: Any, session: Any, envelope: Any) -> str:
        envelope_from.append(envelope.mail_from)
        return await keep(srv, session, envelope)

    server.recorder.handle_DATA = handle_data  # type: ignore[method-assign, assignment]
    dated(project.drop(DATA / "shape_meta.txt"))
    report = run(config, now=clock)
    assert report.delivery is not None and len(report.delivery.sent) == 2
    assert envelope_from == ["digest@example.org"] * 2  # the envelope: the bare address
    for raw, msg in zip(server.recorder.received, server.recorder.messages(), strict=True):
        sender = msg["From"].addresses[0]
        assert (sender.display_name, sender.addr_spec) == (name, "digest@example.org")
        assert re.fullmatch(r"<digest\.1\.[0-9a-f]{16}@example\.org>", str(msg["Message-ID"]))
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        assert head.isascii()  # on the wire: ASCII, a non-ASCII name as RFC 2047 words
        line = re.search(rb"^From:(.*(?:\r?\n[ \t].*)*)", head, re.M)
        assert line is not None
        value = b" ".join(line.group(1).split())
        if name.isascii():
            assert value == f"{name} <digest@example.org>".encode()
        else:
            assert re.search(rb"=\?utf-8\?[qb]\?", value, re.I), value
            assert value.endswith(b" <digest@example.org>")
