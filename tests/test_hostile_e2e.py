"""Live-source documents through the whole run: new versions are not new papers, a control
character in a feed cannot poison the store, and what the HF sources add (summary, links)
reaches the digest inert, checked by a real browser."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import feedparser
import pytest
from conftest import Project, dated

from digest.cli import main


def arxiv_rss(items: list[tuple[str, int, str, str]]) -> str:
    """An arXiv RSS listing (the 2024+ format): (id, version, announce type, title)."""
    body = "".join(f"""
    <item>
      <title>{title}</title>
      <link>https://arxiv.org/abs/{aid}</link>
      <description>arXiv:{aid}v{v} Announce Type: {kind}
Abstract: We study {title.lower()} with a simple baseline and a new benchmark.</description>
      <guid isPermaLink="false">oai:arXiv.org:{aid}v{v}</guid>
      <category>cs.CV</category>
      <pubDate>Tue, 05 Nov 2024 00:00:00 -0500</pubDate>
      <arxiv:announce_type>{kind}</arxiv:announce_type>
      <dc:creator>Ada Shell, Bruno Slime and Carl Spiral</dc:creator>
    </item>""" for aid, v, kind, title in items)
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/"
     version="2.0">
  <channel>
    <title>cs.CV updates on arXiv.org</title>
    <link>http://rss.arxiv.org/rss/cs.CV</link>
    <description>cs.CV updates on the arXiv.org e-print archive.</description>{body}
  </channel>
</rss>
"""


def run_json(project: Project, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code = main(["run", "--config", str(project.config_path), "--json", "--no-send"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report: dict[str, object] = json.loads(out)
    return report


def delivered(project: Project, name: str = "all") -> list[str]:
    """Titles in every digest issue of ``name``, in order."""
    db = sqlite3.connect(project.root / "data" / "digest.sqlite3")
    rows = db.execute("SELECT p.title FROM issues i JOIN issue_items ii ON ii.issue_id = i.id"
                      " JOIN papers p ON p.id = ii.paper_id WHERE i.subscriber = ?"
                      " ORDER BY i.number, ii.rank", (name,)).fetchall()
    db.close()
    return sorted(r[0] for r in rows)


def test_a_new_version_is_not_a_new_paper(project: Project, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "cv-1.xml"
    first.write_text(arxiv_rss([("2411.01234", 1, "new", "Snail Tracking"),
                                ("2409.03456", 3, "replace", "Fog Lighthouses")]))
    dated(project.drop(first))
    assert run_json(project, capsys)["new_papers"] == 1
    assert delivered(project) == ["Snail Tracking"]

    second = tmp_path / "cv-2.xml"
    second.write_text(arxiv_rss([("2411.01234", 2, "replace", "Snail Tracking"),
                                 ("2409.03456", 4, "replace-cross", "Fog Lighthouses"),
                                 ("2411.05678", 1, "cross", "Puddle Depth")]))
    dated(project.drop(second))
    assert run_json(project, capsys)["new_papers"] == 1
    assert delivered(project) == ["Puddle Depth", "Snail Tracking"]

    db = sqlite3.connect(project.root / "data" / "digest.sqlite3")
    versions = dict(db.execute("SELECT arxiv_id, version FROM papers").fetchall())
    sightings = db.execute("SELECT count(*) FROM sightings s JOIN papers p ON p.id = s.paper_id"
                           " WHERE p.arxiv_id = '2411.01234'").fetchone()[0]
    db.close()
    assert versions == {"2411.01234": 2, "2409.03456": 4, "2411.05678": 1}
    assert sightings == 2  # one paper, seen twice
    # The HF page later lists the replaced paper: it was seen, so it is not new either.
    page = tmp_path / "hf.json"
    page.write_text(json.dumps([{"paper": {"id": "2409.03456", "title": "Fog Lighthouses",
                                           "summary": "Fog hides lighthouses."}}]))
    dated(project.drop(page))
    assert run_json(project, capsys)["new_papers"] == 0


def test_a_control_character_in_a_feed_cannot_poison_later_runs(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "blog.rss"
    feed.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Lab</title>'
        "<link>https://lab.example.org/</link><item><title>Medical \x01imaging notes</title>"
        "<link>https://lab.example.org/a\x01b</link><author>x@example.org (Ana\x1b Bee)</author>"
        "<description>Medical images, CLIP and \x02 data curation.</description></item>"
        "<item><title>Second post</title><link>https://lab.example.org/2</link>"
        "<description>Nothing odd.</description></item></channel></rss>", encoding="utf-8")
    dated(project.drop(feed))
    assert run_json(project, capsys)["new_papers"] == 2
    for _ in range(2):  # and every later run works too
        assert run_json(project, capsys)["new_papers"] == 0
    for name in ("ana", "all"):
        parsed = feedparser.parse((project.root / "feeds" / f"{name}.atom").read_bytes())
        assert parsed.bozo == 0
        links = [e.get("link") for e in parsed.entries]
        assert not any("\x01" in (link or "") for link in links)
    stored = sqlite3.connect(project.root / "data" / "digest.sqlite3").execute(
        "SELECT title, url, abstract FROM papers ORDER BY id").fetchall()
    assert stored[0][0] == "Medical imaging notes"
    assert stored[0][1] is None  # a URL with a control inside is dropped, not repaired
    assert not any(c in "".join(str(v) for row in stored for v in row) for c in "\x01\x02\x1b")


HOSTILE_DAILY = [{
    "paper": {
        "id": "2411.07777",
        "title": "Medical <img src=x onerror=\"document.body.dataset.pwned=1\"> segmentation",
        "summary": "We segment medical images.<script>document.body.dataset.pwned=2</script>",
        "ai_summary": "<svg onload=\"document.body.dataset.pwned=3\">A short summary</svg>",
        "githubRepo": "javascript:document.body.dataset.pwned=4",
        "projectPage": "https://example.org/\"><script>document.body.dataset.pwned=5</script>",
        "authors": [{"name": "<b onmouseover=\"document.body.dataset.pwned=6\">Ana</b>"}],
        "upvotes": 3,
    },
    "submittedOnDailyAt": "2026-11-23T10:00:00.000Z",
}]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium must be installed (Debian package chromium; .ci/run does)"
    return found


def rendered_dom(html: Path, profile: Path) -> str:
    """The DOM after Chromium loaded the page and ran whatever scripts it would run."""
    out = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=2000",
         "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def test_hostile_hf_fields_are_inert_in_a_real_browser(project: Project, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    dump = tmp_path / "daily.json"
    dump.write_text(json.dumps(HOSTILE_DAILY), encoding="utf-8")
    dated(project.drop(dump))
    assert run_json(project, capsys)["new_papers"] == 1
    html = next((project.root / "data" / "digests" / "ana").glob("*.html"))
    text = html.read_text(encoding="utf-8")
    assert "A short summary" in text and "In short" in text  # the summary is shown
    dom = rendered_dom(html, tmp_path / "chromium-profile")
    assert "<body" in dom and "segmentation" in dom
    assert "data-pwned" not in dom
    assert 'href="javascript:' not in dom
