"""What readers see: Atom feeds read back with feedparser, escaping, template overrides."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import markdown
from conftest import DATA, Clock, Project, dated, tree_state
from lxml import etree

from digest.pipeline import run

ATOM = "{http://www.w3.org/2005/Atom}"


class Scan(HTMLParser):
    """Collects what would execute in a browser."""

    def __init__(self) -> None:
        super().__init__()
        self.danger: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "svg", "img", "meta", "base"):
            self.danger.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.danger.append(f"{tag}[{name}]")
            if value and re.match(r"\s*(javascript|data|vbscript):", value, re.I):
                self.danger.append(f"{tag}[{name}={value}]")


def dangers(html: str) -> list[str]:
    scan = Scan()
    scan.feed(html)
    return scan.danger


def feed_of(project: Project, name: str) -> Path:
    return project.root / "feeds" / f"{name}.atom"


def test_feeds_are_valid_and_carry_the_ranked_papers(project: Project, clock: Clock,
                                                     shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[1]))
    report = run(project.config(), now=clock)
    ana = {d["subscriber"]: d for d in report.digests}["ana"]
    parsed = feedparser.parse(str(feed_of(project, "ana")))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert len(parsed.entries) == ana["matched"] > 0
    ids = [e.id for e in parsed.entries]
    assert len(set(ids)) == len(ids)
    assert all(re.match(r"^tag:digest\.example\.org,2026-11-23:paper/[0-9a-f]{20}$", i)
               for i in ids)
    self_links = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert self_links == ["https://digest.example.org/feeds/ana.atom"]
    first = parsed.entries[0]
    assert first.published == first.updated == "2026-11-23T08:00:00+00:00"
    assert {t.term for t in first.tags} <= {"CLIP", "data curation", "medical"}
    assert parsed.feed.updated == "2026-11-23T08:00:00+00:00"


def test_feed_ids_stable_newest_first_and_window(project: Project, clock: Clock,
                                                 shared_dumps: list[Path]) -> None:
    project.write_config("[[subscribers]]\nname = \"all\"\nmax_items = 1000\n",
                         extra="feed_size = 150")
    dated(project.drop(shared_dumps[1]))
    run(project.config(), now=clock)
    first = {e.title: e.id for e in feedparser.parse(str(feed_of(project, "all"))).entries}
    clock.tick(5)
    dated(project.drop(shared_dumps[2]))
    second = run(project.config(), now=clock).new_papers
    parsed = feedparser.parse(str(feed_of(project, "all")))
    assert parsed.bozo == 0
    again = {e.title: e.id for e in parsed.entries}
    assert len(again) == 35 + second and second > 40
    assert {t: again[t] for t in first} == first  # ids never change once published
    published = [e.published for e in parsed.entries]
    assert published == sorted(published, reverse=True)
    assert published[0] == "2026-11-23T13:00:00+00:00"
    project.write_config("[[subscribers]]\nname = \"all\"\nmax_items = 1000\n",
                         extra="feed_size = 10")
    clock.tick()
    run(project.config(), now=clock)
    window = feedparser.parse(str(feed_of(project, "all"))).entries
    assert [e.id for e in window] == [e.id for e in parsed.entries[:10]]


def test_a_run_with_nothing_new_leaves_feeds_byte_identical(project: Project, clock: Clock,
                                                            shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[0]))
    run(project.config(), now=clock)
    feeds = tree_state(project.root / "feeds")
    assert set(feeds) == {"ana.atom", "all.atom"}
    clock.tick(30)
    report = run(project.config(), now=clock)
    assert report.feeds_written == [] and len(report.feeds_unchanged) == 2
    assert tree_state(project.root / "feeds") == feeds


def test_hostile_text_is_inert_everywhere(project: Project, clock: Clock) -> None:
    dated(project.drop(DATA / "hostile.txt"))
    run(project.config(), now=clock)
    md_path, = (project.root / "data" / "digests" / "all").glob("*.md")
    html_path, = (project.root / "data" / "digests" / "all").glob("*.html")
    html = html_path.read_text(encoding="utf-8")
    head, body = html.split("<body>", 1)
    assert dangers(body) == [] and "<script" not in head
    assert [t for t in re.findall(r"<(\w+)", head) if t not in ("html", "head", "meta", "title",
                                                                "link", "style")] == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    rendered_md = markdown.markdown(md_path.read_text(encoding="utf-8"))
    assert dangers(rendered_md) == []
    assert "&lt;a href=" in rendered_md  # the hostile anchor survives only as text
    unlinked = re.sub(r'href="[^"]*"', "", html)  # signed vote links hold random hex
    assert "{{ 7*7 }}" in html and "49" not in unlinked  # template syntax stays text
    raw = feed_of(project, "all").read_bytes()
    tree = etree.fromstring(raw)  # well-formed XML despite ]]> and control characters
    titles = [e.findtext(f"{ATOM}title") for e in tree.iter(f"{ATOM}entry")]
    assert "<script>alert(1)</script>" in titles
    assert "<img src=x onerror=alert(1)>" in titles
    for content in tree.iter(f"{ATOM}content"):
        assert content.get("type") == "html"
        assert dangers(content.text or "") == []
    parsed = feedparser.parse(raw)
    assert parsed.bozo == 0
    assert all(dangers(e.content[0].value) == [] for e in parsed.entries)


def test_user_templates_override_the_bundled_ones(project: Project, clock: Clock,
                                                  shared_dumps: list[Path]) -> None:
    custom = project.root / "my-templates"
    custom.mkdir()
    (custom / "digest.md.j2").write_text(
        "CUSTOM {{ digest.profile.name }} {{ digest.new_count }} "
        "{{ digest.items[0].paper.title }}\n")
    project.write_config("[[subscribers]]\nname = \"all\"\n",
                         extra='templates = "my-templates"')
    dated(project.drop(DATA / "hostile.txt"))
    run(project.config(), now=clock)
    md_path, = (project.root / "data" / "digests" / "all").glob("*.md")
    html_path, = (project.root / "data" / "digests" / "all").glob("*.html")
    text = md_path.read_text(encoding="utf-8")
    assert text.startswith("CUSTOM all 4 ")
    assert "&lt;" in text  # even a user's template cannot emit raw HTML from paper text
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")  # bundled


def test_operator_intro_is_rendered_from_markdown(project: Project, clock: Clock) -> None:
    project.write_config("[[subscribers]]\nname = \"all\"\n",
                         extra='intro = "Reply to *the lab list* with questions."')
    dated(project.drop(DATA / "shape_blank.txt"))
    run(project.config(), now=clock)
    folder = project.root / "data" / "digests" / "all"
    html, = folder.glob("*.html")
    md, = folder.glob("*.md")
    assert "Reply to <em>the lab list</em> with questions." in html.read_text()
    assert "Reply to *the lab list* with questions." in md.read_text()


def test_links_cannot_smuggle_markdown_into_the_markdown_digest(project: Project,
                                                               clock: Clock) -> None:
    abstract = ("We study links that try to break out. See https://example.com/[x](javascript:"
                "alert(1)) and https://e.com/`code` and https://e.com/a\\\\b. " * 3)
    (project.inbox / "links.txt").write_text(
        "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\n"
        f"A paper about links\n\n{abstract}\n")
    run(project.config(), now=clock)
    md, = (project.root / "data" / "digests" / "all").glob("*.md")
    rendered = markdown.markdown(md.read_text(encoding="utf-8"))
    assert dangers(rendered) == []
    hrefs = re.findall(r'<a href="([^"]*)"', rendered)
    assert hrefs and all(h.startswith("https://") for h in hrefs)
    assert "<code>" not in rendered and rendered.count("<a ") == len(hrefs)
    assert not any("<a" in inner for inner in re.findall(r"<a [^>]*>(.*?)</a>", rendered))


def test_digest_files_keep_whole_abstracts_count_authors_and_mark_titles(
        project: Project, clock: Clock, shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[1]))
    run(project.config(), now=clock)
    folder = project.root / "data" / "digests" / "ana"
    html = next(folder.glob("*.html")).read_text(encoding="utf-8")
    text = next(folder.glob("*.md")).read_text(encoding="utf-8")
    assert "Read more" not in html + text and "\u2026 " not in html  # not trimmed: not mail
    assert "without their abstracts" not in html and "more on the web" not in html
    assert re.search(r" &middot; \d+ authors? &middot; ", html)  # text dumps: a count only
    assert re.search(r"; \d+ authors?[;.]", text)
    titles = re.findall(r"<h3>\d+\. (.*?)</h3>", html)
    assert titles and any("<mark>" in t for t in titles)
    for meta in re.findall(r'<p class="meta">Score .*?</p>', html):  # each keyword once
        chips = re.findall(r'<span class="kw">([^<]+)</span>', meta)
        assert chips and len(chips) == len(set(chips))
        assert all(meta.count(f">{c}<") == 1 for c in chips)
