"""Authors by name in the Atom feed, read back by feedparser (a real feed client)."""

from __future__ import annotations

import json
from pathlib import Path

import feedparser
from conftest import Clock, Project, dated

from digest.pipeline import run

PAPERS = [
    {"paper": {"id": "2611.00011", "title": "CLIP pairs curated at scale",
               "summary": "We curate CLIP image-text pairs.",
               "authors": [{"name": f"Author {n}"} for n in range(12)], "upvotes": 3},
     "submittedOnDailyAt": "2026-11-23T10:00:00.000Z"},
    {"paper": {"id": "2611.00012", "title": "Medical CLIP without names",
               "summary": "A medical CLIP model.", "authors": [], "upvotes": 1},
     "submittedOnDailyAt": "2026-11-23T10:00:00.000Z"},
    {"paper": {"id": "2611.00013", "title": "Data curation <script>x</script> for CLIP",
               "summary": "Data curation for CLIP.",
               "authors": [{"name": "<b onmouseover=alert(1)>Eve</b>"}], "upvotes": 2},
     "submittedOnDailyAt": "2026-11-23T10:00:00.000Z"},
]


def test_feed_entries_name_their_authors(project: Project, clock: Clock,
                                         tmp_path: Path) -> None:
    dump = tmp_path / "daily.json"
    dump.write_text(json.dumps(PAPERS), encoding="utf-8")
    dated(project.drop(dump))
    run(project.config(), now=clock, send=False)
    feed = feedparser.parse((project.root / "feeds" / "ana.atom").read_bytes())
    assert feed.bozo == 0
    by_title = {e.title: e for e in feed.entries}
    many = by_title["CLIP pairs curated at scale"]
    assert [a.name for a in many.authors] == [f"Author {n}" for n in range(10)]
    assert "+9 more" in many.content[0].value  # the content names three, then the rest
    nameless = by_title["Medical CLIP without names"]
    assert "authors" not in nameless and feed.feed.author == "Test digest"  # the feed's one
    hostile = next(e for e in feed.entries if e.title.startswith("Data curation"))
    assert [a.name for a in hostile.authors] == ["<b onmouseover=alert(1)>Eve</b>"]
    raw = (project.root / "feeds" / "ana.atom").read_text(encoding="utf-8")
    assert "<b onmouseover" not in raw  # escaped in the XML
