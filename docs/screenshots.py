"""Make the README's pictures: an issue page as served, and the e-mail, in headless Chromium.

    python docs/screenshots.py [--out docs]

Builds a throwaway project in a temporary folder with a small invented day of papers,
runs digest on it (mail queued, never sent), serves the site with ``digest serve`` and
writes ``issue-page.png`` (1000 px wide) and ``email.png`` (600 px wide) into ``--out``.
The clock is fixed, so the pictures change only when the pages do. Needs Debian's
``chromium`` (as the browser tests do).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the browser driver and the serve helper live there

from browser import Browser  # noqa: E402
from serving import serving  # noqa: E402

from digest import pipeline  # noqa: E402
from digest.config import load_config  # noqa: E402
from digest.store import Store  # noqa: E402

NOW = datetime(2026, 11, 24, 7, 30, tzinfo=UTC)
MAX_HEIGHT = 1400  # CSS pixels: the top of a long page is what a reader sees first

CONFIG = """\
[digest]
title = "Vision & data papers"
inbox = "inbox"
data_dir = "data"
feeds_dir = "feeds"
site_url = "https://papers.example.org/"

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from = "digest@example.org"

[[subscribers]]
name = "mira"
email = "mira@example.org"
keywords = ["data curation", "CLIP", { term = "medical", weight = 2 }]
exclude = ["survey"]
"""

# An invented day of papers (the Hugging Face daily-papers JSON shape).
PAPERS = [
    ("2411.20411", "Less but Cleaner: Data Curation Beats Scale for Medical CLIP Models",
     "We pretrain CLIP-style encoders on 40 million radiology image-report pairs and show "
     "that aggressive data curation (deduplication, report-quality filters and balanced "
     "sampling across body regions) matters more than the size of the corpus. A model "
     "trained on the curated fifth of the data matches the full-data model on eleven "
     "medical retrieval and zero-shot classification benchmarks.",
     ["Mira Okafor", "Jonas Lind", "Priya Raman"], 41),
    ("2411.20436", "Curriculum Sampling for Contrastive Image-Text Pretraining",
     "Contrastive pretraining treats every image-text pair alike. We order pairs by a "
     "cheap alignment score and sample easy pairs first, which speeds up CLIP training "
     "by 1.6x at equal zero-shot accuracy and makes data curation thresholds less "
     "sensitive to tune.",
     ["Hugo Ferreira", "Aiko Tanaka"], 18),
    ("2411.20502", "Segment Anything in Ultrasound with Ten Labelled Scans",
     "We adapt a promptable segmentation model to medical ultrasound with ten labelled "
     "scans per organ and a self-training loop, closing most of the gap to fully "
     "supervised models on three public datasets.",
     ["Lena Brandt", "Samuel Osei", "Wei Zhang", "Clara Nilsson"], 27),
    ("2411.20577", "Sparse Mixture-of-Experts for Hour-Long Speech Recognition",
     "A sparse mixture of experts keeps word error rates flat on hour-long recordings "
     "while halving the compute of a dense transformer of the same quality.",
     ["Dana Ruiz", "Eli Grant"], 9),
    ("2411.20613", "TabBench: Tabular Reasoning in Language Models",
     "We release 4,000 questions over real spreadsheets and find that chain-of-thought "
     "helps only when the whole table fits in the context window.",
     ["Farah Hill"], 6),
]


def make_project(folder: Path) -> Path:
    """The throwaway project: config, inbox with the sample day, one run done."""
    (folder / "inbox").mkdir(parents=True)
    config_path = folder / "config.toml"
    config_path.write_text(CONFIG, encoding="utf-8")
    day = [{"paper": {"id": aid, "title": title, "summary": abstract, "upvotes": votes,
                      "authors": [{"name": a} for a in authors]},
            "submittedOnDailyAt": "2026-11-23T18:00:00.000Z"}
           for aid, title, abstract, authors, votes in PAPERS]
    (folder / "inbox" / "daily.json").write_text(json.dumps(day, indent=1), encoding="utf-8")
    pipeline.run(load_config(config_path), now=lambda: NOW, send=False)
    return config_path


def email_html(config_path: Path, target: Path) -> Path:
    """The HTML part of the first queued message, written to ``target``."""
    config = load_config(config_path)
    store = Store.open(config.store_path)
    try:
        raw = store.deliveries(("pending",))[0].raw
    finally:
        store.close()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    if part is None:
        raise SystemExit("the queued e-mail has no HTML part")
    target.write_text(part.get_content(), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    """Write issue-page.png and email.png into --out (default: docs/)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="folder for the PNGs (default: docs/ of the repo)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="digest-screenshots-") as tmp:
        folder = Path(tmp)
        os.environ["DIGEST_CACHE_DIR"] = str(folder / "cache")  # never the user's own cache
        config_path = make_project(folder / "project")
        config = load_config(config_path)
        issue = sorted((config.site / "mira").glob("[0-9][0-9][0-9][0-9]-*.html"))[-1]
        mail = email_html(config_path, folder / "email.html")
        with serving(config_path) as served, Browser.launch(folder / "profile") as browser:
            base = served.base.rstrip("/") + "/"
            page = browser.open(f"{base}mira/{issue.name}", width=1000, height=900)
            for error in page.console_errors:
                print(f"warning: issue page: {error}", file=sys.stderr)
            page.screenshot(out / "issue-page.png", max_height=MAX_HEIGHT)
            letter = browser.open(mail.as_uri(), width=600, height=900)
            for error in letter.console_errors:
                print(f"warning: e-mail: {error}", file=sys.stderr)
            letter.screenshot(out / "email.png", max_height=MAX_HEIGHT)
    for name in ("issue-page.png", "email.png"):
        path = out / name
        print(f"{path}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
