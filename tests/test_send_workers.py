"""Several senders on one outbox (threads, processes; SQLite and PostgreSQL), against a real
SMTP server: every message goes out once per claim, a dead sender's claims are taken over
only when their lease ends (then only an accepted, unmarked message can arrive twice, with
its Message-ID), and [smtp].max_per_minute holds across all senders."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import Clock, Project, dated
from mailserver import Recorder, Server, smtp_table

from digest.cli import main
from digest.errors import DeliveryError
from digest.pipeline import run, send_pending
from digest.send import CLAIM_BATCH, LEASE, deliver_parallel
from digest.store import Store, open_store

READERS = 12  # more than one claim batch of a single sender, a few for each of 4 workers
WORKERS = 4


class TimedRecorder(Recorder):
    """Also notes when each message arrived, over which connection, and how many were in
    DATA at once; the first message waits (a while at most) until another connection is
    in DATA too, so ``peak`` shows whether the senders really ran side by side."""

    def __init__(self, overlap: bool = False) -> None:
        super().__init__()
        self.arrived: list[float] = []
        self.peers: list[str] = []
        self.active = 0
        self.peak = 0
        self.overlap = overlap

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrived = time.time()
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.overlap and not self.received:
                for _ in range(500):  # at most 5 s: the other workers are connecting
                    if self.peak > 1:
                        break
                    await asyncio.sleep(0.01)
            reply = await super().handle_DATA(server, session, envelope)
        finally:
            self.active -= 1
        if reply.startswith("250"):
            self.arrived.append(arrived)
            self.peers.append(str(session.peer))
        return reply


def timed_server(overlap: bool = False) -> Server:
    server = Server()
    server.recorder = TimedRecorder(overlap)
    return server.start()


@pytest.fixture
def smtp_server() -> Iterator[Server]:
    server = timed_server(overlap=True)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_table(request: pytest.FixtureRequest) -> str:
    """The config's [store] table: none (SQLite in data/) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    url = request.getfixturevalue("pg_url")
    return f'[store]\nurl = "{url}"\n'


def readers(n: int) -> str:
    return "".join(f'\n[[subscribers]]\nname = "r{i:02d}"\nemail = "r{i:02d}@example.org"\n'
                   "max_items = 3\n" for i in range(n))


def queue(project: Project, server: Server, store_table: str, shared_dumps: list[Path],
          clock: Clock, smtp_extra: str = "") -> None:
    """One issue for each of READERS readers, queued and not sent."""
    project.write_config(readers(READERS),
                         extra=smtp_table(server.port, smtp_extra) + store_table)
    dated(project.drop(shared_dumps[1]))
    run(project.config(), now=clock, send=False)
    assert len(queued_ids(project)) == READERS


def with_store(project: Project, use: Callable[[Store], Any]) -> Any:
    store = open_store(project.config())
    try:
        return use(store)
    finally:
        store.close()


def queued_ids(project: Project) -> dict[str, str]:
    """Message-ID -> status, for every message in the outbox."""
    return with_store(project, lambda s: {d.message_id: d.status for d in
                                          s.deliveries(("pending", "sent", "failed"))})


def claimed(project: Project) -> dict[str, str]:
    """Message-ID -> the sender holding it, for messages under a claim."""
    rows = with_store(project, lambda s: s.conn.execute(
        "SELECT o.message_id, c.claimed_by FROM outbox_claims c JOIN outbox o ON o.id = c.id"
        " WHERE c.claimed_by IS NOT NULL").fetchall())
    return {str(m): str(w) for m, w in rows}


def received(server: Server) -> Counter[str]:
    return Counter(str(m["Message-ID"]) for m in server.recorder.messages())


def recorder(server: Server) -> TimedRecorder:
    assert isinstance(server.recorder, TimedRecorder)
    return server.recorder


def send_processes(project: Project, count: int, *args: str,
                   env: dict[str, str] | None = None) -> list[subprocess.Popen[str]]:
    """``digest send`` in ``count`` processes started at once (the venv's entry point)."""
    entry = Path(sys.executable).with_name("digest")
    command = [str(entry)] if entry.is_file() else [
        sys.executable, "-c", "import sys; from digest.cli import main; sys.exit(main())"]
    return [subprocess.Popen([*command, "send", "--config", str(project.config_path), "--json",
                              *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, **(env or {})})
            for _ in range(count)]


def finished(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    return results


def real_now() -> datetime:
    return datetime.now(UTC)


# -- (a) one process, N workers --------------------------------------------------------------
def test_send_with_four_workers_delivers_every_message_once(
        project: Project, smtp_server: Server, clock: Clock, shared_dumps: list[Path],
        store_table: str, capsys: pytest.CaptureFixture[str]) -> None:
    queue(project, smtp_server, store_table, shared_dumps, clock)
    capsys.readouterr()
    code = main(["send", "--workers", str(WORKERS), "--json", "--config",
                 str(project.config_path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["sent"] == READERS and out["retrying"] == out["failed"] == []
    got = received(smtp_server)
    assert set(got) == set(queued_ids(project)) and set(got.values()) == {1}
    assert set(queued_ids(project).values()) == {"sent"} and claimed(project) == {}
    timed = recorder(smtp_server)
    assert timed.peak > 1  # two connections were in DATA at the same time
    assert 1 < len(set(timed.peers)) <= WORKERS


def test_workers_share_one_pass_retrying_each_failure_once(
        project: Project, smtp_server: Server, clock: Clock, shared_dumps: list[Path],
        store_table: str) -> None:
    smtp_server.recorder.script.rcpt = {"r03@example.org": ["451 4.7.1 Greylisted"] * 5,
                                        "r07@example.org": ["550 5.1.1 No such user"]}
    queue(project, smtp_server, store_table, shared_dumps, clock)
    report, _ = send_pending(project.config(), now=clock, workers=WORKERS)
    assert len(report.sent) == READERS - 2
    assert [r for _, r in report.retrying] == ["451 4.7.1 Greylisted"]  # once, by one worker
    assert [r for _, r in report.failed] == ["550 5.1.1 No such user"]
    assert sorted(queued_ids(project).values()) == ["failed", "pending"] + ["sent"] * (
        READERS - 2)
    report, _ = send_pending(project.config(), now=clock, workers=WORKERS)  # the next pass
    assert (report.sent, len(report.retrying)) == ([], 1)
    assert set(received(smtp_server).values()) == {1}


def test_a_server_that_cannot_be_reached_leaves_each_message_to_retry_once(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str) -> None:
    server = timed_server()
    queue(project, server, store_table, shared_dumps, clock)
    server.stop()
    report, _ = send_pending(project.config(), now=clock, workers=WORKERS)
    assert report.sent == [] and len(report.retrying) == READERS
    assert {m for m, _ in report.retrying} == set(queued_ids(project))
    assert all(r.startswith("cannot connect to 127.0.0.1:") for _, r in report.retrying)
    assert claimed(project) == {}
    server.start()
    try:
        report, _ = send_pending(project.config(), now=clock, workers=WORKERS)
        assert len(report.sent) == READERS and set(received(server).values()) == {1}
    finally:
        server.stop()


def test_a_relay_refusing_to_send_for_us_stops_every_worker_and_marks_nothing(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str) -> None:
    server = timed_server()
    try:
        queue(project, server, store_table, shared_dumps, clock)
        server.recorder.script.mail = ["550 5.7.1 Sender address rejected"] * READERS
        with pytest.raises(DeliveryError, match="refuses to send for us"):
            send_pending(project.config(), now=clock, workers=WORKERS)
        assert set(queued_ids(project).values()) == {"pending"} and claimed(project) == {}
        assert server.recorder.received == []
        server.recorder.script.mail = []
        report, _ = send_pending(project.config(), now=clock, workers=WORKERS)
        assert len(report.sent) == READERS and set(received(server).values()) == {1}
    finally:
        server.stop()


# -- (b) several processes at once -----------------------------------------------------------
def test_four_send_processes_at_once_deliver_every_message_once(
        project: Project, smtp_server: Server, clock: Clock, shared_dumps: list[Path],
        store_table: str) -> None:
    queue(project, smtp_server, store_table, shared_dumps, clock)
    results = finished(send_processes(project, 4))
    assert [code for code, _, _ in results] == [0] * 4, results
    sent = [json.loads(out)["sent"] for _, out, _ in results]
    assert sum(sent) == READERS
    got = received(smtp_server)
    assert set(got) == set(queued_ids(project)) and set(got.values()) == {1}
    assert set(queued_ids(project).values()) == {"sent"} and claimed(project) == {}


# -- (c) a sender that dies ------------------------------------------------------------------
def test_claims_of_a_dead_sender_are_taken_over_only_when_the_lease_ends(
        project: Project, smtp_server: Server, clock: Clock, shared_dumps: list[Path],
        store_table: str) -> None:
    queue(project, smtp_server, store_table, shared_dumps, clock)
    held = with_store(project, lambda s: s.claim("dead-host:1:x:0", 5, LEASE, clock(),
                                                 due_only=False))
    held_ids = {d.message_id for d in held}
    assert len(held_ids) == 5 and set(claimed(project).values()) == {"dead-host:1:x:0"}
    report, _ = send_pending(project.config(), now=clock, workers=WORKERS)
    assert len(report.sent) == READERS - 5 and not set(report.sent) & held_ids
    clock.now += LEASE  # the lease ends at this second, not before
    assert send_pending(project.config(), now=clock, workers=WORKERS)[0].sent == []
    clock.now += timedelta(seconds=1)
    report, _ = send_pending(project.config(), now=clock, workers=WORKERS)
    assert set(report.sent) == held_ids
    got = received(smtp_server)
    assert set(got) == set(queued_ids(project)) and set(got.values()) == {1}
    assert claimed(project) == {}


@pytest.mark.parametrize("workers", [1, 3])
def test_a_sender_killed_after_the_server_accepted_a_message(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str,
        workers: int) -> None:
    """SIGKILLed between the server's 250 and the commit: its claims wait out the lease;
    then the only messages sent twice are those the server had accepted, same Message-ID."""
    server = timed_server()
    try:
        queue(project, server, store_table, shared_dumps, clock)
        (code, out, err), = finished(send_processes(
            project, 1, "--workers", str(workers),
            env={"DIGEST_FAULT": "send:after-accept:kill"}))
        assert code == -9, (out, err)
        before = received(server)
        assert before and set(before.values()) == {1}
        assert set(queued_ids(project).values()) == {"pending"}  # none was marked sent
        held = set(claimed(project))
        assert set(before) <= held
        report, _ = send_pending(project.config(), now=real_now, workers=2)
        assert set(report.sent) == set(queued_ids(project)) - held  # not what it holds
        # What the server had accepted of the dead sender's, read once the server surely
        # finished with its last connection (a message whose DATA was all sent just before
        # the kill can be accepted after ``before`` was read).
        accepted = {m for m in received(server) if m in held}
        assert set(before) <= accepted
        later = lambda: real_now() + LEASE + timedelta(seconds=1)  # noqa: E731
        report, _ = send_pending(project.config(), now=later, workers=2)
        assert set(report.sent) == held
        got = received(server)
        assert set(got) == set(queued_ids(project))
        assert {m for m, n in got.items() if n > 1} == accepted  # RFC 1047: only those
        assert set(got.values()) <= {1, 2}
        assert set(queued_ids(project).values()) == {"sent"} and claimed(project) == {}
    finally:
        server.stop()


def test_a_sender_whose_lease_ran_out_leaves_the_message_to_the_one_that_took_it(
        project: Project, smtp_server: Server, clock: Clock, shared_dumps: list[Path],
        store_table: str) -> None:
    """Claims are renewed before each message; one that another sender took over meanwhile
    (the lease had run out) is not sent."""
    from digest.send import deliver

    queue(project, smtp_server, store_table, shared_dumps, clock)
    recorder(smtp_server).overlap = False
    config = project.config()
    assert config.smtp is not None
    store, thief = open_store(config), open_store(config)
    taken: list[str] = []

    def on_progress(line: str) -> None:
        if line.startswith("sent") and not taken:  # the sender stalls past its lease
            clock.now += LEASE + timedelta(seconds=1)
            taken.extend(d.message_id for d in thief.claim("thief", READERS, LEASE, clock(),
                                                           due_only=False))

    try:
        report = deliver(store, config.smtp, clock, due_only=False, progress=on_progress)
        assert len(report.sent) == 1 and len(taken) == READERS - 1
        assert set(received(smtp_server)) == set(report.sent)
        assert set(claimed(project)) == set(taken)
        assert set(claimed(project).values()) == {"thief"}
    finally:
        store.close()
        thief.close()


# -- (d) the rate limit across senders -------------------------------------------------------
def test_max_per_minute_holds_across_workers(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every send slot is reserved in the store; the slots of all workers are a minute's
    worth apart (here one a second), whoever reserved them. Nothing really sleeps."""
    server = timed_server()
    try:
        queue(project, server, store_table, shared_dumps, clock, "max_per_minute = 60")
        slots: list[float] = []
        lock = threading.Lock()
        reserve = Store.pace

        def pace(store: Store, interval_s: float, now_epoch: float) -> float:
            slot = reserve(store, interval_s, now_epoch)
            with lock:
                slots.append(slot)
            return slot

        monkeypatch.setattr(Store, "pace", pace)
        naps: list[float] = []
        config = project.config()
        assert config.smtp is not None
        report = deliver_parallel(lambda: open_store(config), config.smtp, clock, WORKERS,
                                  due_only=False, sleep=naps.append)
        assert len(report.sent) == READERS and set(received(server).values()) == {1}
        slots.sort()
        assert len(slots) == READERS
        gaps = [b - a for a, b in itertools.pairwise(slots)]
        assert min(gaps) >= 1.0 - 1e-6  # one a second, whichever worker sent
        assert 0 < len(naps) < READERS and max(naps) <= (READERS - 1) * 1.0  # to its slot
        kept = with_store(project, lambda s: s.conn.execute(
            "SELECT next_at FROM send_pace").fetchall())
        assert kept == [(pytest.approx(slots[-1] + 1.0, abs=1e-6),)]
    finally:
        server.stop()


def test_max_per_minute_holds_across_processes(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str) -> None:
    """Four processes, 600 a minute, the store's first free slot set 3 s ahead: the k-th
    message to arrive cannot arrive before that plus k tenths of a second (a lower bound,
    whatever the speed of the machine)."""
    server = timed_server()
    try:
        queue(project, server, store_table, shared_dumps, clock, "max_per_minute = 600")
        first = time.time() + 3.0
        with_store(project, lambda s: s.pace(0.0, first))  # the next slot: ``first``
        results = finished(send_processes(project, 4))
        assert [code for code, _, _ in results] == [0] * 4, results
        arrived = sorted(recorder(server).arrived)
        assert len(arrived) == READERS and set(received(server).values()) == {1}
        for k, at in enumerate(arrived):
            assert at >= first + k * 0.1 - 0.001, (k, at - first)
    finally:
        server.stop()


# -- the store's claims and slots themselves -------------------------------------------------
def test_concurrent_claimers_never_take_the_same_message(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str) -> None:
    server = timed_server()
    try:
        queue(project, server, store_table, shared_dumps, clock)
    finally:
        server.stop()
    config = project.config()
    takes: dict[int, list[int]] = {}
    go = threading.Barrier(6)

    def claimer(n: int) -> None:
        store = open_store(config)
        try:
            go.wait(timeout=60)
            while batch := store.claim(f"w{n}", 2, LEASE, clock(), due_only=False):
                takes.setdefault(n, []).extend(d.id for d in batch)
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in takes.values() for i in ids]
    assert len(every) == len(set(every)) == READERS  # each message taken once, by one
    store = open_store(config)
    try:
        assert store.claim("late", CLAIM_BATCH, LEASE, clock(), due_only=False) == []
        n, ids = max(takes.items(), key=lambda item: len(item[1]))
        store.mark_sent(ids[0], clock())  # a mark clears the claim
        assert store.release(f"w{n}") == len(ids) - 1  # what it still held, given back
        again = store.claim("late", READERS, LEASE, clock(), due_only=False)
        assert sorted(d.id for d in again) == sorted(ids[1:])
    finally:
        store.close()


def test_pace_reserves_slots_an_interval_apart_for_every_connection(
        store_table: str, project: Project) -> None:
    project.write_config(readers(1), extra=store_table)
    config = project.config()
    slots: list[float] = []
    lock = threading.Lock()

    def reserver() -> None:
        store = open_store(config)
        try:
            for _ in range(5):
                slot = store.pace(0.5, 1000.0)
                with lock:
                    slots.append(slot)
        finally:
            store.close()

    threads = [threading.Thread(target=reserver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(slots) == [1000.0 + 0.5 * k for k in range(20)]
    store = open_store(config)
    try:
        assert store.pace(0.5, 2000.0) == 2000.0  # a slot in the past is not waited for
        assert store.pace(0.5, 1990.0) == 2000.5  # a clock a little behind waits for it
        # ...but one far behind (a clock stepped back) does not stall on it.
        assert store.pace(0.5, 1000.0) == 1000.0
    finally:
        store.close()


def test_a_pass_tries_each_message_once_even_when_the_latest_tried_one_is_sent(
        project: Project, clock: Clock, shared_dumps: list[Path], store_table: str) -> None:
    """The try marks only grow: a message sent (its claim row gone) cannot bring the next
    mark back below a pass's start, so the pass never claims a message it just retried."""
    server = timed_server()
    try:
        queue(project, server, store_table, shared_dumps, clock)
    finally:
        server.stop()
    store = open_store(project.config())
    try:
        first, second = store.claim("w", 2, LEASE, clock(), due_only=False)
        for _ in range(5):  # earlier passes: the first message was retried five times
            store.mark_retry(first.id, "451 try later", clock())
        upto = store.tries()  # a new pass starts here
        store.mark_sent(first.id, clock())  # ... and sends it: its claim row goes
        store.mark_retry(second.id, "451 try later", clock())  # the second is retried
        assert store.tries() > upto
        again = store.claim("w", READERS, LEASE, clock(), due_only=False, tried_upto=upto)
        assert second.id not in {d.id for d in again}  # not again in the same pass
    finally:
        store.close()
