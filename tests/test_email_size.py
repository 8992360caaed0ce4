"""A 200-item digest's e-mail fits under Gmail's clip, end to end through the outbox."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

from conftest import Clock, Project, dated
from mailserver import smtp_table

from digest.pipeline import run
from digest.store import Store

MANY = """
[[subscribers]]
name = "many"
email = "many@example.org"
max_items = 200
"""


def test_a_200_item_email_is_cut_to_fit_and_says_so(project: Project, clock: Clock,
                                                     shared_dumps: list[Path]) -> None:
    project.write_config(MANY, extra="also_new = 0\n" + smtp_table(9))
    for dump in shared_dumps:
        dated(project.drop(dump))
    report = run(project.config(), now=clock, send=False)
    (digest,) = report.digests
    assert digest["matched"] >= 150  # a firehose reader: every new paper is an item
    store = Store.open(project.config().store_path)
    try:
        (queued,) = store.deliveries(("pending",))
    finally:
        store.close()
    msg = email.message_from_bytes(queued.raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    html = msg.get_body(("html",))
    assert html is not None
    size = len(html.get_content().encode("utf-8"))
    assert size < 100_000, size
    text = html.get_content()
    assert "more on the web" in text and "https://digest.example.org/many/0001-" in text
    assert any("was cut to fit 100 KB" in w for w in report.warnings)
    # the local digest file keeps every item with its whole abstract
    local = Path(str(digest["html"])).read_text(encoding="utf-8")
    assert len(local.encode("utf-8")) > size and local.count("<h3>") >= digest["matched"]
