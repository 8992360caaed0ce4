"""The static site a run builds: index, archives, issue pages; relative links that resolve,
feeds to discover, writes only of what changed, a rebuild from the store, hostile text kept
text, and the 👍/👎 links in the e-mail, the digest files and the issue pages."""

from __future__ import annotations

import json
import re
import shutil
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import DATA, Clock, Project, dated, tree_state
from mailserver import Server
from test_output import dangers

from digest import tokens
from digest.config import load_config
from digest.errors import ConfigError
from digest.pipeline import run
from digest.render import Renderer
from digest.site import build, build_site, keys
from digest.store import Store

FEEDS = "https://digest.example.org/feeds/"


def daily(path: Path, papers: list[tuple[str, str, str]]) -> Path:
    """A Hugging Face daily-papers JSON dump of (arXiv id, title, abstract)."""
    rows = [{"paper": {"id": aid, "title": title, "summary": abstract, "upvotes": 3,
                       "authors": [{"name": "A. Author"}]},
             "submittedOnDailyAt": "2026-11-23T10:00:00.000Z"} for aid, title, abstract in papers]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return dated(path)


DAY_ONE = [
    ("2611.00001", "CLIP Features for Medical Segmentation",
     "We segment medical scans with CLIP features and find CLIP helps medical tasks."),
    ("2611.00002", "Data Curation for CLIP Pretraining",
     "Curating CLIP pretraining data beats larger models; CLIP gains from deduplication."),
    ("2611.00003", "Speech Recognition with Sparse Experts",
     "A sparse mixture of experts keeps speech recognition accurate on long audio."),
]
DAY_TWO = [
    ("2611.00011", "Medical Report Generation from X-rays",
     "Radiology reports for medical X-ray images, rated by clinicians in a medical study."),
    ("2611.00012", "Tabular Reasoning in Language Models",
     "A benchmark of table questions shows chain-of-thought helps on small tables."),
]
DAY_THREE = [
    ("2611.00021", "Robot Grasping from Touch",
     "A robot arm learns to grasp unseen objects from tactile sensors."),
]

READERS = """
[[subscribers]]
name = "ana"
email = "ana@example.org"
keywords = ["CLIP", "medical"]

[[subscribers]]
name = "all"
max_items = 1000
"""
EXTRA = "also_new = 1000\n[ranking]\nsemantic = false"


@pytest.fixture
def readers(project: Project) -> Project:
    project.write_config(READERS, extra=EXTRA)
    return project


class Page(HTMLParser):
    """The links, alternates, tags and attributes of one page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.anchors: list[dict[str, str]] = []
        self.alternates: list[str] = []
        self.stylesheets: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.attributes.update(found)
        if tag == "a" and "href" in found:
            self.anchors.append(found)
        if tag == "link" and found.get("rel") == "alternate":
            assert found.get("type") == "application/atom+xml"
            self.alternates.append(found["href"])
        if tag == "link" and found.get("rel") in ("stylesheet", "icon"):
            self.stylesheets.append(found["href"])

    @property
    def hrefs(self) -> list[str]:
        return [a["href"] for a in self.anchors]


def page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def issue_pages(site: Path, name: str) -> list[Path]:
    return sorted((site / name).glob("[0-9][0-9][0-9][0-9]-*.html"))


def two_runs(project: Project, clock: Clock) -> Path:
    """Two runs, one dump each; the site folder."""
    daily(project.inbox / "one.json", DAY_ONE)
    run(project.config(), now=clock)
    clock.tick()
    daily(project.inbox / "two.json", DAY_TWO)
    run(project.config(), now=clock)
    clock.tick()
    return project.config().site


def test_a_run_builds_pages_whose_relative_links_resolve(readers: Project,
                                                        clock: Clock) -> None:
    site = two_runs(readers, clock)
    assert site == readers.root / "site"
    assert [p.name for p in issue_pages(site, "ana")] == ["0001-2026-11-23.html",
                                                          "0002-2026-11-23.html"]
    assert len(issue_pages(site, "all")) == 2
    pages = sorted(site.rglob("*.html"))
    assert {str(p.relative_to(site)) for p in pages} == {
        "index.html", "ana/index.html", "all/index.html", *(
            f"{n}/{p.name}" for n in ("ana", "all") for p in issue_pages(site, n))}
    for path in pages:
        parsed = page(path)
        up = "" if path.parent == site else "../"
        assert parsed.stylesheets == [up + "site.css", up + "favicon.svg"]
        for href in parsed.hrefs + parsed.stylesheets:
            if urlsplit(href).scheme:
                assert href.startswith("https://"), (path, href)  # feeds, papers, votes
                continue
            assert not href.startswith("/"), (path, href)  # relative: any host, file://
            assert (path.parent / href).resolve().is_file(), (path, href)
    index = page(site / "index.html")
    assert index.alternates == [FEEDS + "ana.atom", FEEDS + "all.atom"]
    assert {"ana/index.html", "all/index.html", "ana/0002-2026-11-23.html"} <= set(index.hrefs)
    for path in (site / "ana" / "index.html", *issue_pages(site, "ana")):
        assert page(path).alternates == [FEEDS + "ana.atom"]


def test_the_archive_lists_issues_newest_first_with_counts_and_keywords(
        readers: Project, clock: Clock) -> None:
    site = two_runs(readers, clock)
    html = (site / "ana" / "index.html").read_text(encoding="utf-8")
    rows = re.findall(r'<li><a href="(\d{4}-[\d-]+\.html)">Issue (\d+)</a>.*?'
                      r'<p class="meta">(\d+) new papers? &middot; (\d+) matched(.*?)</p>',
                      html, re.S)
    assert [(r[0], r[1]) for r in rows] == [("0002-2026-11-23.html", "2"),
                                            ("0001-2026-11-23.html", "1")]
    assert [(r[2], r[3]) for r in rows] == [("2", "1"), ("3", "2")]
    assert re.findall(r'<span class="kw">([^<]+)</span>', rows[0][4]) == ["medical"]
    assert re.findall(r'<span class="kw">([^<]+)</span>', rows[1][4]) == ["CLIP", "medical"]


def test_issue_pages_link_previous_and_next_and_say_what_they_cover(
        readers: Project, clock: Clock) -> None:
    site = two_runs(readers, clock)
    first, second = issue_pages(site, "ana")
    one, two = page(first), page(second)
    assert [a["href"] for a in one.anchors if a.get("rel") == "next"] == [second.name]
    assert not [a for a in one.anchors if a.get("rel") == "prev"]
    assert [a["href"] for a in two.anchors if a.get("rel") == "prev"] == [first.name]
    assert "index.html" in two.hrefs and "../index.html" in two.hrefs
    text = second.read_text(encoding="utf-8")
    assert "Covers papers first seen from 2026-11-23 08:00 UTC to 2026-11-23 09:00 UTC" in text
    assert "Medical Report Generation from X-rays" in text
    assert "Tabular Reasoning" not in text  # not matched: not in ana's issue
    assert "Unsubscribe" not in text and "unsubscribe" not in text
    assert "Covers papers first seen up to 2026-11-23 08:00 UTC" in first.read_text()


def test_nothing_new_rewrites_nothing_and_an_issue_writes_only_its_pages(
        readers: Project, clock: Clock) -> None:
    daily(readers.inbox / "one.json", DAY_ONE)
    first = run(readers.config(), now=clock)
    site = readers.config().site
    assert {Path(p).relative_to(site).as_posix() for p in first.site_written} == {
        "site.css", "favicon.svg", "index.html", "ana/index.html", "ana/0001-2026-11-23.html",
        "all/index.html", "all/0001-2026-11-23.html"}
    before = tree_state(site)
    clock.tick()
    again = run(readers.config(), now=clock)
    assert again.site_written == [] and not again.digests
    assert tree_state(site) == before  # same bytes, same mtimes
    clock.tick()
    daily(readers.inbox / "two.json", DAY_TWO)
    report = run(readers.config(), now=clock, due={"all": None})  # only 'all' is due
    assert [d["subscriber"] for d in report.digests] == ["all"]
    assert {Path(p).relative_to(site).as_posix() for p in report.site_written} == {
        "index.html", "all/index.html", "all/0002-2026-11-23.html",
        "all/0001-2026-11-23.html"}  # the one before gains its "next" link
    after = tree_state(site)
    assert {k: v for k, v in after.items() if not k.startswith("all/") and k != "index.html"} \
        == {k: v for k, v in before.items() if not k.startswith("all/") and k != "index.html"}


def test_a_run_restores_the_pages_of_someone_whose_pages_went_missing(
        readers: Project, clock: Clock) -> None:
    site = two_runs(readers, clock)
    state = tree_state(site)
    shutil.rmtree(site / "ana")
    report = run(readers.config(), now=clock)
    assert not report.digests
    assert sorted(Path(p).relative_to(site).as_posix() for p in report.site_written) == [
        "ana/0001-2026-11-23.html", "ana/0002-2026-11-23.html", "ana/index.html"]
    assert {k: v[2] for k, v in tree_state(site).items()} == {k: v[2] for k, v in state.items()}


def test_build_site_reproduces_the_same_bytes_and_skips_what_is_identical(
        readers: Project, clock: Clock) -> None:
    site = two_runs(readers, clock)
    made = {k: v[2] for k, v in tree_state(site).items()}
    shutil.rmtree(site)
    report = build(readers.config())
    assert report.folder == site and report.unchanged == 0
    assert sorted(Path(p).relative_to(site).as_posix() for p in report.written) == sorted(made)
    assert {k: v[2] for k, v in tree_state(site).items()} == made
    again = build(readers.config())
    assert again.written == [] and again.unchanged == len(made)


def test_a_changed_template_or_title_rebuilds_every_page(readers: Project,
                                                        clock: Clock) -> None:
    site = two_runs(readers, clock)
    custom = readers.root / "my-templates"
    custom.mkdir()
    base = Renderer().source("site_base.html.j2")
    (custom / "site_base.html.j2").write_text(
        base.replace('<div class="page">', '<div class="page">\n<p class="meta">CUSTOM</p>'))
    readers.write_config(READERS, extra='templates = "my-templates"\n' + EXTRA)
    report = run(readers.config(), now=clock)
    assert not report.digests  # nothing new: the fingerprint alone asks for every page
    pages = sorted(site.rglob("*.html"))
    assert sorted(report.site_written) == sorted(map(str, pages))  # site.css is the same
    assert all("CUSTOM" in p.read_text(encoding="utf-8") for p in pages)
    clock.tick()
    assert run(readers.config(), now=clock).site_written == []  # the new one is stored
    text = readers.config_path.read_text().replace('title = "Test digest"',
                                                   'title = "Lab papers"')
    readers.config_path.write_text(text)
    report = run(readers.config(), now=clock)
    assert {str(p) for p in pages} <= set(report.site_written)
    assert all("Lab papers" in p.read_text(encoding="utf-8") for p in pages)


def test_a_changed_reader_rebuilds_only_their_pages_and_the_index(readers: Project,
                                                                  clock: Clock) -> None:
    site = two_runs(readers, clock)
    (site / "ana" / "0001-2026-11-23.html").write_text("stale")  # redone only if rendered
    (site / "all" / "0001-2026-11-23.html").write_text("stale")
    others = tree_state(site / "all")
    readers.write_config(READERS.replace('["CLIP", "medical"]', '["CLIP", "medical", "speech"]'),
                         extra=EXTRA)
    report = run(readers.config(), now=clock)
    assert not report.digests  # nothing new: ana's fingerprint alone asks for her pages
    written = {Path(p).relative_to(site).as_posix() for p in report.site_written}
    assert written <= {"index.html", "ana/index.html", *(
        f"ana/{p.name}" for p in issue_pages(site, "ana"))}
    assert {"index.html", "ana/0001-2026-11-23.html"} <= written
    assert "speech" in (site / "ana" / "0001-2026-11-23.html").read_text()
    assert tree_state(site / "all") == others  # not rendered: still stale, same mtime
    clock.tick()
    assert run(readers.config(), now=clock).site_written == []  # the new parts are stored
    # A new reader renders nobody else's pages either (their own come with an issue).
    kept = tree_state(site)
    readers.write_config(READERS.replace('["CLIP", "medical"]', '["CLIP", "medical", "speech"]')
                         + '\n[[subscribers]]\nname = "cy"\nkeywords = ["robot"]\n',
                         extra=EXTRA)
    report = run(readers.config(), now=clock)
    assert [Path(p).relative_to(site).as_posix() for p in report.site_written] == ["index.html"]
    assert {k: v for k, v in tree_state(site).items() if k != "index.html"} == \
        {k: v for k, v in kept.items() if k != "index.html"}


def test_an_old_plain_fingerprint_means_everything_changed(readers: Project,
                                                          clock: Clock) -> None:
    site = two_runs(readers, clock)
    config = readers.config()
    store = Store.open(config.store_path)
    key = keys(config)[0]
    mark = store.meta(key)
    assert mark and set(json.loads(mark)) == {"global", "readers"}
    store.set_meta(key, "0" * 64)  # what an older version stored
    store.close()
    for path in site.rglob("*.html"):
        path.write_text("stale")
    run(config, now=clock)
    assert not [p for p in site.rglob("*.html") if p.read_text() == "stale"]
    store = Store.open(config.store_path)
    assert store.meta(key) == mark
    store.close()


def test_renamed_issue_pages_leave_nothing_stale_behind(readers: Project,
                                                       clock: Clock) -> None:
    site = two_runs(readers, clock)
    mine = site / "ana" / "notes.html"
    mine.write_text("mine")
    odd = site / "ana" / "0001-2026-11-23.html.bak"
    odd.write_text("mine too")
    readers.write_config(READERS, extra='timezone = "Pacific/Honolulu"\n' + EXTRA)
    report = run(readers.config(), now=clock)
    assert not report.digests
    for name in ("ana", "all"):
        assert [p.name for p in issue_pages(site, name)] == ["0001-2026-11-22.html",
                                                             "0002-2026-11-22.html"]
    assert mine.read_text() == "mine" and odd.read_text() == "mine too"
    assert sorted(p.name for p in (site / "ana").iterdir()) == [
        "0001-2026-11-22.html", "0001-2026-11-23.html.bak", "0002-2026-11-22.html",
        "index.html", "notes.html"]
    stale = site / "all" / "0007-2026-11-23.html"  # build-site removes them too, and says so
    stale.write_text("old")
    rebuilt = build(readers.config())
    assert rebuilt.removed == [str(stale)] and not stale.exists() and mine.is_file()
    for path in site.rglob("*.html"):
        for href in page(path).hrefs:
            if not urlsplit(href).scheme:
                assert (path.parent / href).resolve().is_file(), (path, href)


def test_a_read_only_store_builds_every_page_and_keeps_its_meta(readers: Project,
                                                               clock: Clock) -> None:
    site = two_runs(readers, clock)
    config = readers.config()
    (site / "ana" / "0001-2026-11-23.html").write_text("stale")
    before = Store.open(config.store_path)
    mark = before.meta(keys(readers.config())[0])
    before.close()
    assert mark
    custom = readers.root / "my-templates"
    custom.mkdir()
    (custom / "site_issue.html.j2").write_text(
        Renderer().source("site_issue.html.j2").replace("Top matches", "Best matches"))
    readers.write_config(READERS, extra='templates = "my-templates"\n' + EXTRA)
    config = readers.config()
    store = Store.read_only(config.store_path)
    assert store is not None
    try:
        report = build_site(config, store, Renderer(config.templates),
                            tokens.load_secret(config.data_dir), subscribers=())
    finally:
        store.close()
    assert str(site / "ana" / "0001-2026-11-23.html") in report.written
    assert all("Best matches" in p.read_text() for p in issue_pages(site, "ana"))
    after = Store.open(config.store_path)
    assert after.meta(keys(readers.config())[0]) == mark  # could not be written: no error
    after.close()


def test_without_a_store_the_site_is_the_index_alone(readers: Project) -> None:
    report = build(readers.config())
    site = readers.config().site
    assert sorted(p.name for p in site.rglob("*") if p.is_file()) == [
        "favicon.svg", "index.html", "site.css"]
    assert len(report.written) == 3
    assert "No issue yet." in (site / "index.html").read_text()


def test_a_removed_subscriber_keeps_old_pages_but_leaves_the_index(readers: Project,
                                                                  clock: Clock) -> None:
    site = two_runs(readers, clock)
    kept = tree_state(site / "ana")
    readers.write_config(READERS.split("[[subscribers]]\nname = \"all\"")[0].replace(
        'name = "ana"', 'name = "bea"'), extra=EXTRA)
    daily(readers.inbox / "three.json", DAY_THREE)
    run(readers.config(), now=clock)
    assert tree_state(site / "ana") == kept and (site / "all").is_dir()
    hrefs = page(site / "index.html").hrefs
    assert not any(h.startswith(("ana/", "all/")) for h in hrefs)
    assert "bea/index.html" in hrefs and (site / "bea" / "index.html").is_file()
    # Until someone's first issue, the index shows them with no links to pages.
    readers.write_config(READERS.replace('name = "all"', 'name = "cy"'), extra=EXTRA)
    run(readers.config(), now=clock)
    html = (site / "index.html").read_text()
    assert "<h2>cy</h2>" in html and not (site / "cy").exists()
    assert "cy/index.html" not in html and f'href="{FEEDS}cy.atom"' in html



def test_without_site_url_feeds_are_relative_and_there_are_no_vote_links(
        readers: Project, clock: Clock) -> None:
    text = readers.config_path.read_text().replace(
        'site_url = "https://digest.example.org/"\n', "")
    readers.config_path.write_text(text)
    site = two_runs(readers, clock)
    assert page(site / "index.html").alternates == ["feeds/ana.atom", "feeds/all.atom"]
    archive = page(site / "ana" / "index.html")
    assert archive.alternates == ["../feeds/ana.atom"] and "../feeds/ana.atom" in archive.hrefs
    for path in site.rglob("*.html"):
        assert "data-feedback" not in page(path).attributes


def test_hostile_titles_stay_text_and_pages_have_no_inline_style_or_script(
        readers: Project, clock: Clock) -> None:
    dated(readers.drop(DATA / "hostile.txt"))
    run(readers.config(), now=clock)
    site = readers.config().site
    (issue,) = issue_pages(site, "all")
    html = issue.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert dangers(html.split("<body>", 1)[1]) == []
    pages = list(site.rglob("*.html"))
    assert len(pages) == 5
    for path in pages:
        parsed = page(path)
        assert "style" not in parsed.attributes, path  # the CSP refuses inline styles
        assert not parsed.tags & {"style", "script"}, path
        assert not re.search(r"<(script|style)\b", path.read_text(), re.I), path
    css = (site / "site.css").read_text()
    assert "@media (prefers-color-scheme: dark)" in css and "{%" not in css
    assert "max-width: 680px" in css


def test_vote_links_in_the_mail_the_digest_files_and_the_issue_pages(
        mailing: Project, server: Server, clock: Clock, shared_dumps: list[Path]) -> None:
    dated(mailing.drop(shared_dumps[1]))
    run(mailing.config(), now=clock)
    config = mailing.config()
    secret = (config.data_dir / "secret").read_bytes().strip()
    store = Store.open(config.store_path)
    try:
        issue = store.issues("ana")[0]
        keys = [r.paper.key for r in store.issue_items(issue.id)]
    finally:
        store.close()
    assert len(keys) > 3
    msg = next(m for m in server.recorder.messages() if "ana@" in str(m["To"]))
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)

    def votes(anchors: list[dict[str, str]],
              public: bool = False) -> dict[tuple[str, bool], str]:
        found: dict[tuple[str, bool], str] = {}
        for a in anchors:
            if "data-feedback" not in a:
                continue
            query = parse_qs(urlsplit(a["href"]).query)
            like = a["data-feedback"] == "like"
            assert a["data-feedback"] in ("like", "dislike")
            assert query["u"] == ["ana"] and query["v"] == [a["data-feedback"]]
            assert query.get("s") == (["1"] if public else None)  # s=1: a site page's link
            key, token = query["p"][0], query["t"][0]
            subject = tokens.vote_subject("ana", key)
            assert (key, like) not in found, "two links for one paper and direction"
            assert tokens.verify(secret, tokens.vote_purpose(like, public), subject, token)
            for other in ((not like, public), (like, not public), (not like, not public)):
                assert not tokens.verify(secret, tokens.vote_purpose(*other), subject, token)
            found[(key, like)] = a["href"]
        return found

    mailed = votes(Page(html.get_content()).anchors)
    assert set(mailed) == {(k, like) for k in keys for like in (True, False)}
    assert all(h.startswith("https://digest.example.org/vote?") for h in mailed.values())
    feedback = [a["href"] for a in Page(html.get_content()).anchors
                if a["href"].startswith("https://digest.example.org/feedback?")]
    assert len(feedback) == 1
    token = parse_qs(urlsplit(feedback[0]).query)["t"][0]
    assert tokens.verify(secret, tokens.FEEDBACK, "ana", token)

    text = plain.get_content().replace("\r\n", "\n")
    pairs = re.findall(r"^More like this: <([^>]+)> · Less like this: <([^>]+)>$", text, re.M)
    assert len(pairs) == len(keys)
    assert [parse_qs(urlsplit(like).query)["p"][0] for like, _ in pairs] == keys
    for like, dislike in pairs:
        for url, up in ((like, True), (dislike, False)):
            query = parse_qs(urlsplit(url).query)
            assert tokens.verify(secret, tokens.vote_purpose(up),
                                 tokens.vote_subject("ana", query["p"][0]), query["t"][0])
    assert "Your votes: <https://digest.example.org/feedback?" in text

    (on_site,) = issue_pages(config.site, "ana")
    public = votes(page(on_site).anchors, public=True)  # public links on the issue page
    assert set(public) == set(mailed) and not set(public.values()) & set(mailed.values())
    assert all(h.startswith("https://digest.example.org/vote?") for h in public.values())
    (local,) = (config.digests_dir / "ana").glob("*.html")
    assert votes(page(local).anchors) == mailed  # and in the digest file
    assert "unsubscribe" not in local.read_text() and "unsubscribe" not in on_site.read_text()


@pytest.mark.parametrize("site_dir", ["data", ".", "data/site"])
def test_a_site_folder_holding_the_data_or_the_config_is_refused(project: Project,
                                                                 site_dir: str) -> None:
    project.write_config(READERS, extra=f'site_dir = "{site_dir}"\n' + EXTRA)
    with pytest.raises(ConfigError) as caught:
        load_config(project.config_path)
    assert "site_dir" in str(caught.value)


def test_an_unwritable_site_folder_stops_the_run_before_ingest(readers: Project,
                                                               clock: Clock) -> None:
    (readers.root / "site").write_text("not a folder")
    daily(readers.inbox / "one.json", DAY_ONE)
    with pytest.raises(ConfigError) as caught:
        run(readers.config(), now=clock)
    assert "[digest].site_dir" in str(caught.value)
    assert not (readers.root / "data" / "digest.sqlite3").exists()
