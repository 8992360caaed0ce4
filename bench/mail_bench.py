"""Rendering and sending N digests (default 1,000) to a local SMTP server.

    python bench/mail_bench.py [--subscribers 1000] [--papers 300]

A real SMTP server (aiosmtpd) listens on 127.0.0.1 with STARTTLS (a test certificate from
trustme, as a real relay would have) and counts what it accepts. Times ``digest run``
(render, inline CSS, queue in the outbox), then delivery of the whole outbox over one
reused connection, beside the naive way: a new TLS connection per message.
"""

from __future__ import annotations

import argparse
import os
import random
import smtplib
import socket
import ssl
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller

from digest.config import load_config
from digest.pipeline import run, send_pending
from digest.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_bench import synthetic_papers, vocabulary, write_dump


class Counter:
    """An SMTP sink that only counts."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 OK"


def main() -> None:
    """Print the timings."""
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--papers", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(7)
    vocab = vocabulary(rng, 3000)
    work = Path(tempfile.mkdtemp(prefix="digest-mail-bench-"))
    (work / "inbox").mkdir()
    write_dump(work / "inbox" / "today.txt", synthetic_papers(args.papers, rng, vocab, "Paper"))
    sink = Counter()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ca = trustme.CA()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=server_tls,
                            require_starttls=True)
    controller.start()
    lines = ['[digest]\nsite_url = "https://bench.example.org/"\n',
             f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "starttls"\n'
             f'from = "digest@bench.example.org"\nca_file = "{ca_file}"\n']
    middle = vocab[30:800]
    for i in range(args.subscribers):
        kws = ", ".join(f'"{w}"' for w in rng.sample(middle, 5))
        lines.append(f'[[subscribers]]\nname = "s{i:04d}"\nemail = "s{i:04d}@bench.example.org"'
                     f"\nkeywords = [{kws}]\nfeed = false\n")
    (work / "config.toml").write_text("\n".join(lines))
    config = load_config(work / "config.toml")
    now = datetime(2026, 11, 23, 8, tzinfo=UTC)

    start = time.perf_counter()
    report = run(config, now=lambda: now, send=False)
    t_render = time.perf_counter() - start
    assert len(report.digests) == args.subscribers

    store = Store.open(config.store_path)
    raws = [d.raw for d in store.deliveries(("pending",))[:100]]
    size = sum(len(r) for r in raws) / max(1, len(raws))
    store.close()
    start = time.perf_counter()
    delivery, _ = send_pending(config, now=lambda: now)
    t_send = time.perf_counter() - start
    assert len(delivery.sent) == args.subscribers == sink.count

    sample = raws[:100]  # naive: a new connection for every message
    start = time.perf_counter()
    client_tls = ssl.create_default_context(cafile=str(ca_file))
    for raw in sample:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.starttls(context=client_tls)
            client.sendmail("digest@bench.example.org", ["x@bench.example.org"], raw)
    t_naive = (time.perf_counter() - start) * args.subscribers / len(sample)
    controller.stop()

    n = args.subscribers
    print(f"{n:,} subscribers, {args.papers} new papers each, mean message {size / 1024:.1f} KB")
    print(f"render + inline CSS + queue (digest run --no-send): {t_render:6.2f} s "
          f"({n / t_render:,.0f} digests/s)")
    print(f"send over one connection (digest send):           {t_send:6.2f} s "
          f"({n / t_send:,.0f} messages/s)")
    print(f"send, new connection per message (naive, scaled):  {t_naive:6.2f} s "
          f"({n / t_naive:,.0f} messages/s) -> one connection is {t_naive / t_send:.1f}x faster")
    print(f"total render + send: {t_render + t_send:.2f} s")


if __name__ == "__main__":
    main()
