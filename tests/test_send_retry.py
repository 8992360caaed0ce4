"""Giving up on e-mail by time, not by passes, and sending failed mail again (real SMTP)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, Project, dated
from mailserver import SUBSCRIBERS, Server, smtp_table

from digest.cli import main
from digest.pipeline import run, send_pending
from digest.send import MIN_UNCERTAIN_TRIES, UNCERTAIN_WINDOW
from digest.store import Delivery, Store

NO_SUCH_USER = "550 5.1.1 No such user here"


def refused(project: Project, server: Server, clock: Clock, shared_dumps: list[Path],
            replies: dict[str, str]) -> None:
    """Queue one issue per reader and send it once, the server refusing these recipients
    with these replies (so their messages fail)."""
    server.recorder.script.rcpt = {to: [reply] for to, reply in replies.items()}
    queued(project, shared_dumps, clock)
    send_pending(project.config(), now=clock)


def queued(project: Project, shared_dumps: list[Path], clock: Clock) -> None:
    """One issue each for ana and bo, queued and not sent yet."""
    dated(project.drop(shared_dumps[1]))
    run(project.config(), now=clock, send=False)


def delivery(project: Project, name: str, issue: int = 1) -> Delivery:
    store = Store.open(project.config().store_path)
    try:
        (d,) = [d for d in store.deliveries(("pending", "sent", "failed"))
                if d.subscriber == name and d.issue == issue]
        return d
    finally:
        store.close()


def received_ids(server: Server, address: str) -> list[str]:
    return [str(m["Message-ID"]) for m in server.recorder.messages()
            if m["To"].addresses[0].addr_spec == address]


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    assert code in (0, 3), out
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def test_unconfirmed_tries_go_on_for_24_hours_then_fail_and_can_be_sent_again(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert (timedelta(hours=24), 3) == (UNCERTAIN_WINDOW, MIN_UNCERTAIN_TRIES)  # as below
    server.recorder.script.drop_for = {"ana@example.org"}  # hangs up after ana's data
    queued(mailing, shared_dumps, clock)
    start = clock.now
    passes = (0, 0.01, 0.02, 1, 6, 12, 23.99)  # more passes than the old limit of 3
    for hours in passes:
        clock.now = start + timedelta(hours=hours)
        send_pending(mailing.config(), now=clock)
        ana = delivery(mailing, "ana")
        assert ana.status == "pending", ana.last_error
        assert ana.uncertain_since == start and ana.next_attempt_at >= clock.now
    assert (ana.attempts, ana.uncertain) == (len(passes), len(passes))
    assert delivery(mailing, "bo").status == "sent"
    clock.now = start + timedelta(hours=24)
    report, _ = send_pending(mailing.config(), now=clock)
    ana = delivery(mailing, "ana")
    assert ana.status == "failed" and ana.failed_at == clock.now
    assert (ana.attempts, ana.uncertain) == (len(passes) + 1, len(passes) + 1)
    assert ana.last_error is not None and ana.last_error.startswith(
        f"gave up after {len(passes) + 1} tries the server never confirmed, the first 24 h ago")
    assert "unconfirmed tries stop after 24 h" in ana.last_error
    assert [reason for _, reason in report.failed] == [ana.last_error]
    assert received_ids(server, "ana@example.org") == []
    # The relay is well again: the message goes out once, with the Message-ID it always had.
    server.recorder.script.drop_for = set()
    result = cli_json(capsys, "send", "--retry-failed", "--subscriber", "ana", "--config",
                      str(mailing.config_path))
    assert result["requeued"] == 1 and result["sent"] == 1 and result["not_requeued"] == []
    assert received_ids(server, "ana@example.org") == [ana.message_id]
    again = delivery(mailing, "ana")
    assert (again.status, again.attempts, again.uncertain, again.uncertain_since,
            again.failed_at, again.last_error) == ("sent", 1, 0, None, None, None)


def test_unconfirmed_tries_spread_thin_get_at_least_three_before_failing(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    server.recorder.script.drop_for = {"ana@example.org"}
    queued(mailing, shared_dumps, clock)
    send_pending(mailing.config(), now=clock)
    clock.tick(30)  # past the 24 h, but only the second try
    send_pending(mailing.config(), now=clock)
    assert delivery(mailing, "ana").status == "pending"
    clock.tick(30)
    send_pending(mailing.config(), now=clock)
    ana = delivery(mailing, "ana")
    assert ana.status == "failed" and ana.uncertain == 3
    assert ana.last_error and ana.last_error.startswith(
        "gave up after 3 tries the server never confirmed, the first 60 h ago")


def test_transient_refusals_are_retried_without_a_limit(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    server.recorder.script.rcpt["ana@example.org"] = ["451 4.7.1 Greylisted"] * 6
    queued(mailing, shared_dumps, clock)
    for _ in range(6):
        send_pending(mailing.config(), now=clock)
        clock.tick(20)
    ana = delivery(mailing, "ana")
    assert (ana.status, ana.attempts, ana.uncertain, ana.uncertain_since) == (
        "pending", 6, 0, None)
    send_pending(mailing.config(), now=clock)
    assert received_ids(server, "ana@example.org") == [ana.message_id]


def test_a_550_fails_at_once_with_the_reply_and_status_says_how_to_send_it_again(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    refused(mailing, server, clock, shared_dumps, {"ana@example.org": NO_SUCH_USER})
    ana = delivery(mailing, "ana")
    assert (ana.status, ana.last_error, ana.failed_at) == (
        "failed", "550 5.1.1 No such user here", clock.now)
    clock.tick(48)
    dated(mailing.drop(shared_dumps[2]))
    run(mailing.config(), now=clock)  # a failed message is not retried by itself
    assert received_ids(server, "ana@example.org") == [delivery(mailing, "ana", 2).message_id]
    assert delivery(mailing, "ana") == ana
    assert main(["status", "--config", str(mailing.config_path)]) == 0
    out = capsys.readouterr().out
    assert "failed   ana issue 1 to ana@example.org (1 attempt(s)): 550 5.1.1 No such user" \
           " here\n" in out
    assert ("failed at 2026-11-23T08:00:00+00:00; send it again: digest send --retry-failed"
            " --subscriber ana\n") in out
    assert "digest send --retry-failed [--subscriber NAME]" in out
    status = cli_json(capsys, "status", "--config", str(mailing.config_path))
    (row,) = status["deliveries"]
    assert row["failed_at"] == "2026-11-23T08:00:00+00:00"
    assert row["last_error"] == "550 5.1.1 No such user here"
    assert row["retry_command"] == "digest send --retry-failed --subscriber ana"
    assert row["message_id"] == ana.message_id and row["not_retryable"] is None


def test_retry_failed_sends_the_same_message_once(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    refused(mailing, server, clock, shared_dumps, {"ana@example.org": NO_SUCH_USER})
    failed = delivery(mailing, "ana")
    assert failed.status == "failed"
    capsys.readouterr()
    assert main(["send", "--retry-failed", "--config", str(mailing.config_path)]) == 0
    out = capsys.readouterr().out
    assert "requeued 1 failed message(s), same Message-ID: ana issue 1\n" in out
    assert "e-mail: 1 sent, 0 to retry, 0 failed" in out
    (got,) = [raw for raw, to in zip(server.recorder.received, server.recorder.recipients,
                                     strict=True) if to == ["ana@example.org"]]
    assert received_ids(server, "ana@example.org") == [failed.message_id]
    assert got.replace(b"\r\n", b"\n").rstrip(b"\n") == \
        failed.raw.replace(b"\r\n", b"\n").rstrip(b"\n")  # the very same bytes
    assert delivery(mailing, "ana").status == "sent"
    result = cli_json(capsys, "send", "--retry-failed", "--config", str(mailing.config_path))
    assert result["requeued"] == 0 and result["sent"] == 0
    assert len(received_ids(server, "ana@example.org")) == 1  # delivered once


def test_retry_failed_for_one_subscriber_leaves_the_others_failed(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    refused(mailing, server, clock, shared_dumps,
            {"ana@example.org": NO_SUCH_USER, "bo@example.org": "554 5.7.1 Relay access denied"})
    result = cli_json(capsys, "send", "--retry-failed", "--subscriber", "bo", "--config",
                      str(mailing.config_path))
    assert result["requeued"] == 1 and result["sent"] == 1
    assert [str(m["To"]) for m in server.recorder.messages()] == ["bo <bo@example.org>"]
    assert delivery(mailing, "ana").status == "failed"
    assert delivery(mailing, "bo").status == "sent"
    capsys.readouterr()
    assert main(["send", "--retry-failed", "--subscriber", "cy", "--config",
                 str(mailing.config_path)]) == 0
    assert "no failed messages to send again for cy" in capsys.readouterr().out
    assert main(["send", "--retry-failed", "--subscriber", "nobody", "--config",
                 str(mailing.config_path)]) == 2
    assert "no subscriber named 'nobody'" in capsys.readouterr().err
    assert main(["send", "--subscriber", "ana", "--config", str(mailing.config_path)]) == 2
    assert main(["send", "--retry-failed", "--dry-run", "--config",
                 str(mailing.config_path)]) == 2
    assert delivery(mailing, "ana").status == "failed"


def test_the_failed_mail_of_an_unsubscribed_subscriber_is_never_sent_again(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    refused(mailing, server, clock, shared_dumps, {"ana@example.org": NO_SUCH_USER})
    assert main(["unsubscribe", "ana@example.org", "--config", str(mailing.config_path)]) == 0
    capsys.readouterr()
    for args in (["--subscriber", "ana"], []):
        assert main(["send", "--retry-failed", *args, "--config",
                     str(mailing.config_path)]) == 0
        out = capsys.readouterr().out
        assert "not requeued: ana issue 1: ana has unsubscribed\n" in out
    result = cli_json(capsys, "send", "--retry-failed", "--config", str(mailing.config_path))
    assert result["requeued"] == 0
    assert result["not_requeued"] == [{"subscriber": "ana", "issue": 1, "reason":
                                       "ana has unsubscribed",
                                       "message_id": delivery(mailing, "ana").message_id}]
    assert delivery(mailing, "ana").status == "failed"
    assert received_ids(server, "ana@example.org") == []
    assert main(["status", "--config", str(mailing.config_path)]) == 0
    out = capsys.readouterr().out
    assert "not sent again: ana has unsubscribed" in out and "--retry-failed" not in out


def test_mail_cancelled_by_unsubscribing_stays_cancelled_after_subscribing_again(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    queued(mailing, shared_dumps, clock)
    assert main(["unsubscribe", "ana@example.org", "--config", str(mailing.config_path)]) == 0
    assert main(["subscribe", "ana@example.org", "--config", str(mailing.config_path)]) == 0
    result = cli_json(capsys, "send", "--retry-failed", "--config", str(mailing.config_path))
    assert result["requeued"] == 0 and result["sent"] == 1  # bo's
    assert delivery(mailing, "ana").status == "failed"
    assert received_ids(server, "ana@example.org") == []


def test_failed_mail_to_an_address_the_config_has_since_changed_stays_failed(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    refused(mailing, server, clock, shared_dumps, {"ana@example.org": NO_SUCH_USER})
    mailing.write_config(SUBSCRIBERS.replace("ana@example.org", "ana@example.net"),
                         extra=smtp_table(server.port))
    result = cli_json(capsys, "send", "--retry-failed", "--config", str(mailing.config_path))
    assert result["requeued"] == 0
    (kept,) = result["not_requeued"]
    assert "addressed to ana@example.org and the config now says ana@example.net" in \
        kept["reason"]
    assert server.recorder.received and received_ids(server, "ana@example.org") == []


def test_an_unsubscribe_during_a_send_pass_stops_the_mail_not_yet_sent(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    """The web unsubscribes without the run lock: a pass that read the queue before must
    re-check each message right before sending it, and leave it cancelled."""
    queued(mailing, shared_dumps, clock)
    config = mailing.config()
    first = delivery(mailing, "ana")
    later = delivery(mailing, "bo")
    assert first.id < later.id  # ana goes first

    def on_progress(line: str) -> None:
        if line.startswith("sent") and "ana" in line:
            from digest.subscriptions import set_mail
            set_mail(config, ["bo"], stop=True, now=clock())

    report, _ = send_pending(config, now=clock, progress=on_progress)
    assert first.message_id in report.sent
    assert later.message_id in report.cancelled and later.message_id not in report.sent
    assert received_ids(server, "bo@example.org") == []
    assert received_ids(server, "ana@example.org") == [first.message_id]
    after = delivery(mailing, "bo")
    assert after.status == "failed" and after.last_error == "unsubscribed before delivery"
