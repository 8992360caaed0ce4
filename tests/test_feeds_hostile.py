"""Feeds from hostile or odd sources: no local file or URL is opened, every field is clean,
one bad entry costs only itself, time grows linearly, arXiv's API and RSS shapes."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from webserver import Web

from digest.cli import main
from digest.errors import InputError
from digest.models import Paper, ParsedDump
from digest.sources import decode, feeds, parse_text, read_dump

LIVE = DATA / "live"
DAY = date(2025, 11, 4)
SECRET_FEED = ('<?xml version="1.0"?><rss version="2.0"><channel><title>private</title>'
               "<item><title>Secret Title From Disk</title><description>classified words"
               "</description></item></channel></rss>")


def rss(*items: str, head: str = "", pad: int = 0) -> str:
    """An RSS 2.0 document; ``pad`` characters of channel text push the items past the part
    of the file that is checked for binary content."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>{head}<rss version="2.0" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Test channel</title>'
            f"<description>{'p' * pad}</description>{''.join(items)}</channel></rss>")


def item(title: str, text: str = "Plain words.", link: str = "", extra: str = "") -> str:
    link_tag = f"<link>{link}</link>" if link else ""
    return (f"<item><title>{title}</title>{link_tag}<description>{text}</description>"
            f"{extra}</item>")


def parse(text: str, name: str = "feed.xml") -> ParsedDump:
    """Through the real entry point: bytes decoded as a dump file is, then sniffed."""
    return parse_text(name, decode(name, text.encode("utf-8")), today=DAY)


def xml_safe(value: str) -> bool:
    """True when the string survives a round trip through a real XML parser."""
    try:
        return (ET.fromstring(f"<a>{escape(value)}</a>").text or "") == value
    except (ET.ParseError, UnicodeEncodeError):
        return False


def strings_of(paper: Paper) -> list[str]:
    return [paper.title, paper.abstract, paper.summary, *paper.author_names,
            *(u for u in (paper.url, *paper.links) if u)]


@pytest.fixture
def web() -> Iterator[Web]:
    w = Web({"/x.xml": (LIVE / "blog.rss", "application/rss+xml")}).start()
    yield w
    w.stop()


# 1. Nothing in a document is taken for a place to open.

@pytest.mark.parametrize("form", ["file-url", "path"])
def test_a_dump_naming_a_local_feed_does_not_publish_it(tmp_path: Path, form: str) -> None:
    folder = tmp_path / "<rss>"  # a folder name that makes the path itself look like a feed
    folder.mkdir()
    secret = folder / "secret.xml"
    secret.write_text(SECRET_FEED, encoding="utf-8")
    dump = tmp_path / "inbox.xml"
    dump.write_text(f"file://{secret}#<rss>" if form == "file-url" else str(secret),
                    encoding="utf-8")
    try:
        parsed = read_dump(dump, today=DAY)
    except InputError as exc:
        assert "Secret Title" not in str(exc)
        return
    assert not any("Secret" in p.title or "classified" in p.abstract for p in parsed.papers)


def test_a_dump_naming_a_url_makes_no_request(tmp_path: Path, web: Web) -> None:
    dump = tmp_path / "inbox.xml"
    dump.write_text(web.url("/x.xml") + "?<rss>", encoding="utf-8")
    with pytest.raises(InputError):
        read_dump(dump, today=DAY)
    assert web.requests == []


def test_the_cli_reads_a_url_dump_as_text_too(tmp_path: Path, web: Web,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "inbox.xml"
    dump.write_text(web.url("/x.xml") + "#<feed>", encoding="utf-8")
    assert main(["parse", "--json", str(dump)]) == 2
    assert "not a readable feed" in capsys.readouterr().err
    assert web.requests == []


@pytest.mark.parametrize("loose", [False, True])
def test_the_declared_encoding_does_not_garble_decoded_text(loose: bool) -> None:
    # The text reaching the parser is already decoded (a fetched latin-1 feed is saved as
    # UTF-8 with its declaration kept); a raw control character forces the lenient parser.
    doc = rss(item("Na\u00efve Caf\u00e9 Bayes", "Cr\u00e8me br\u00fbl\u00e9e \u20ac5."),
              item("Second\x01 entry") if loose else "").replace(
        'encoding="UTF-8"', 'encoding="ISO-8859-1"')
    parsed = parse(doc)
    assert parsed.papers[0].title == "Na\u00efve Caf\u00e9 Bayes"
    assert parsed.papers[0].abstract == "Cr\u00e8me br\u00fbl\u00e9e \u20ac5."


@pytest.mark.parametrize("loose", [False, True])
def test_external_entities_are_never_read(tmp_path: Path, loose: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET", encoding="utf-8")
    head = (f'<!DOCTYPE rss [<!ENTITY x SYSTEM "file://{secret}">'
            f'<!ENTITY % p SYSTEM "file://{secret}"> %p; <!ENTITY ok "fine">]>')
    doc = rss(item("Title &x; &ok;", "Abstract &x; here."),
              item("Other\x01 entry") if loose else "", head=head)
    try:
        parsed = parse(doc)
    except InputError as exc:
        assert "TOPSECRET" not in str(exc)
        return
    assert parsed.papers
    assert all("TOPSECRET" not in s for p in parsed.papers for s in strings_of(p))


def test_xml_base_cannot_turn_links_into_other_schemes() -> None:
    doc = ('<feed xmlns="http://www.w3.org/2005/Atom" xml:base="javascript:alert(1)//">'
           "<title>t</title>"
           '<entry xml:base="file:///etc/"><title>Relative to a file base</title>'
           '<link href="passwd"/><summary>a</summary></entry>'
           '<entry><title>Relative to a script base</title><link href="x"/>'
           "<summary>b</summary></entry>"
           '<entry xml:base="https://lab.example.org/"><title>Absolute is fine</title>'
           '<link href="https://lab.example.org/post"/><link href="ftp://lab.example.org/f"/>'
           "<summary>c</summary></entry></feed>")
    papers = parse(doc).papers
    assert [p.url for p in papers] == [None, None, "https://lab.example.org/post"]
    assert all(p.links == () for p in papers)


# 2. Control characters and other XML-illegal code points, in every field.

BAD = {"soh": "\x01", "nul": "\x00", "esc": "\x1b", "fffe": "\ufffe",
       "ref-nul": "&#0;", "ref-soh": "&#1;", "ref-surrogate": "&#xD800;",
       "ref-low-surrogate": "&#57343;", "ref-fffe": "&#xFFFE;", "ref-ffff": "&#65535;"}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_illegal_characters_are_removed_and_bad_links_dropped(bad: str) -> None:
    doc = rss(item(f"Sparse{bad} Attention", f"We{bad} study it.", f"https://lab.example.org/a{bad}b",
                   f"<dc:creator>Ann{bad} Author</dc:creator>"),
              item("Clean Neighbour", "Fine.", "https://lab.example.org/ok"),
              pad=5000)  # raw NUL must sit past the binary check
    first, second = parse(doc).papers
    assert (first.title, first.abstract) == ("Sparse Attention", "We study it.")
    assert first.author_names == ("Ann Author",)
    assert first.url is None and first.links == ()  # never "fixed" into another address
    assert (second.title, second.url) == ("Clean Neighbour", "https://lab.example.org/ok")
    assert all(xml_safe(s) for p in (first, second) for s in strings_of(p))


@pytest.mark.parametrize("href", [
    "javascript:alert(1)", "file:///etc/passwd", "data:text/html,x", "//lab.example.org/x",
    "/relative", "https://lab.example.org/a b", "https://lab.example.org/a\tb",
    "https://lab.example.org/\u200bx", "https://[::1/x", "http://", "mailto:a@example.org",
])
def test_links_that_are_not_plain_http_are_dropped(href: str) -> None:
    doc = ('<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>A Paper'
           f'</title><link href="{escape(href, {chr(34): "&quot;"})}"/>'
           '<link rel="related" href="https://lab.example.org/ok"/><summary>s</summary>'
           "</entry></feed>")
    (paper,) = parse(doc).papers
    assert paper.url == "https://lab.example.org/ok" and paper.links == ()


# 3. One entry that cannot be read costs only itself.

@pytest.mark.parametrize("ref", ["&#1114112;", "&#xD800;", "&#x110000;",
                                 "&#99999999999999999999999;", "&#x" + "f" * 5000 + ";"])
def test_impossible_character_references_spare_the_document(ref: str) -> None:
    doc = rss(item("First Good Paper"), item(f"Broken{ref} Title", f"Text {ref}.",
                                             f"https://lab.example.org/{ref}"),
              item("Last Good Paper"))
    parsed = parse(doc)
    assert [p.title for p in parsed.papers] == ["First Good Paper", "Broken Title",
                                                "Last Good Paper"]
    assert parsed.papers[1].abstract == "Text ." and parsed.papers[1].url is None


@pytest.mark.parametrize("stamp", ["0000-01-01T00:00:00Z", "99999-01-01T00:00:00Z",
                                   "2025-02-30T00:00:00Z", "-0001-01-01T00:00:00Z"])
def test_a_date_out_of_range_keeps_the_entry(stamp: str) -> None:
    doc = ('<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>\n'
           "<entry><title>Good One</title><published>2025-11-01T00:00:00Z</published>"
           "</entry>\n"
           f"<entry><title>Odd Date</title><published>{stamp}</published></entry>\n"
           "</feed>")
    parsed = parse(doc)
    assert [p.title for p in parsed.papers] == ["Good One", "Odd Date"]
    assert parsed.papers[0].published == date(2025, 11, 1)
    odd = parsed.papers[1]
    assert odd.published is None or 1 <= odd.published.year <= 9999
    if stamp.startswith("0000"):
        assert odd.published is None
        assert [(w.line, "date out of range" in w.message) for w in parsed.warnings] == [
            (3, True)]


def test_a_missing_summary_keeps_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    real = feeds._read

    def without_summary(text: str) -> Any:
        result = real(text)
        result.entries[1]["summary"] = None  # what some feeds made feedparser return
        return result

    monkeypatch.setattr(feeds, "_read", without_summary)
    parsed = parse(rss(item("One"), item("Two"), item("Three")))
    assert [(p.title, p.abstract) for p in parsed.papers] == [
        ("One", "Plain words."), ("Two", ""), ("Three", "Plain words.")]


def test_an_entry_that_crashes_is_skipped_with_a_warning_at_its_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = feeds._names

    def fragile(entry: Any, arxiv_listing: bool) -> tuple[str, ...]:
        if entry.get("title") == "Boom":
            raise RecursionError("maximum recursion depth exceeded")
        return real(entry, arxiv_listing)

    monkeypatch.setattr(feeds, "_names", fragile)
    doc = rss("\n" + item("Before"), "\n\n" + item("Boom"), "\n" + item("After"))
    parsed = parse(doc)
    assert [p.title for p in parsed.papers] == ["Before", "After"]
    assert [p.line for p in parsed.papers] == [2, 5]
    (warning,) = parsed.warnings
    assert warning.line == 4 and warning.message.startswith("entry 2 could not be read")
    assert "RecursionError" in str(warning)


def test_without_findable_lines_the_warning_names_the_entry_number() -> None:
    # An entry start tag inside a comment makes the tag count disagree with feedparser's.
    doc = rss("<!-- <item> -->", item("One"), item(""), item("Three"))
    parsed = parse(doc)
    assert [p.title for p in parsed.papers] == ["One", "Three"]
    assert [(w.line, w.message) for w in parsed.warnings] == [(2, "entry 2 has no title; "
                                                                  "skipped")]


# 4. Time grows with the size of the document, not with its square.

HOSTILE = ("&lt;a " * 40 + "&lt;!--" * 20 + "&lt;![" * 10 + "&lt;b&gt;x" * 20
           + "&amp;amp;&#233;&#xD800;" * 5)


def _best_of_three(text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        feeds.parse("big.xml", text, today=DAY)
        best = min(best, time.perf_counter() - start)
    return best


def _arxiv_api(entries: int, body: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            "<title>q</title>" + "".join(
                f"<entry><id>http://arxiv.org/abs/2511.{i:05d}v1</id><title>Paper {i}</title>"
                f'<summary type="html">{body} {i}</summary><author><name>A {i}</name></author>'
                f'<link href="https://arxiv.org/pdf/2511.{i:05d}v1"/>'
                f'<link href="https://arxiv.org/abs/2511.{i:05d}v1"/>'
                "<published>2025-11-01T00:00:00Z</published></entry>" for i in range(entries))
            + "</feed>")


def test_time_grows_linearly_with_the_number_of_entries() -> None:
    small, large = _arxiv_api(200, HOSTILE), _arxiv_api(1600, HOSTILE)
    assert len(feeds.parse("big.xml", large, today=DAY).papers) == 1600
    ratio = _best_of_three(large) / _best_of_three(small)
    assert ratio < 3 * 8, ratio


@pytest.mark.parametrize("pattern", ["&lt;a ", "&lt;!--", "&lt;![", "a &lt; b "])
def test_time_grows_linearly_with_the_size_of_one_abstract(pattern: str) -> None:
    small, large = _arxiv_api(1, pattern * 750), _arxiv_api(1, pattern * 6000)
    assert feeds.parse("big.xml", large, today=DAY).papers
    ratio = _best_of_three(large) / _best_of_three(small)
    assert ratio < 3 * 8, ratio


def test_time_grows_linearly_with_the_length_of_an_entry_id() -> None:
    """Found by bench/fuzz_parsers.py: the arXiv version pattern was tried from every letter
    of a long word in an id (3 s for an 11 KB feed)."""
    def doc(n: int) -> str:
        return _arxiv_api(1, "words").replace("http://arxiv.org/abs/2511.00000v1",
                                              "urn:x:" + "true" * n, 1)

    small, large = doc(750), doc(6000)
    assert feeds.parse("big.xml", large, today=DAY).papers
    ratio = _best_of_three(large) / _best_of_three(small)
    assert ratio < 3 * 8, ratio


@pytest.mark.parametrize("word", ["1e999", "ab.c-", "x"])
def test_time_grows_linearly_with_the_length_of_an_author(word: str) -> None:
    """Found by bench/fuzz_parsers.py: feedparser looks for an e-mail address in an RSS
    author with a pattern that is quadratic in a long word."""
    def doc(n: int) -> str:
        return rss(item("One", extra=f"<author>Eve {word * n} Rain</author>"
                                     f"<dc:creator>Finn {word * n}</dc:creator>"))

    small, large = doc(2000), doc(16000)
    paper = parse(large).papers[0]
    assert paper.author_names and paper.author_names[0].startswith("Eve ")
    ratio = _best_of_three(large) / _best_of_three(small)
    assert ratio < 3 * 8, ratio


def test_real_author_lines_are_untouched() -> None:
    names = ", ".join(f"Author{i} Surname-Double{i}" for i in range(3000))  # a collaboration
    text = rss(item("Big", extra=f"<author>{names} (team@example.org)</author>"))
    assert parse(text).papers[0].author_names[0].startswith("Author0 Surname-Double0, ")


def _first_line_and_blanks(n: int, kind: str) -> str:
    if kind == "declaration":  # feedparser's encoding pattern rescans the first line
        return ("<?<rss " + ' encoding="a"' * (n // 13) + "\n"
                + rss(item("A")).split("?>", 1)[1])
    return "\n" * n + rss(item("A"))  # its DOCTYPE patterns rescan every blank line


@pytest.mark.parametrize("kind", ["declaration", "blank lines"])
def test_time_grows_linearly_with_the_document_preamble(kind: str) -> None:
    """Found in review: patterns inside feedparser that run before any entry is read."""
    small, large = _first_line_and_blanks(2000, kind), _first_line_and_blanks(16000, kind)
    assert [p.title for p in parse(large).papers] == ["A"]
    ratio = _best_of_three(large) / max(_best_of_three(small), 0.002)
    assert ratio < 3 * 8, ratio


def test_reading_entries_one_by_one_is_linear() -> None:
    """Found in review: when feedparser crashes, each entry used to be read inside the whole
    channel again (channel size x entries)."""
    crash = item("Bad", extra=CRASHES_FEEDPARSER)

    def doc(n: int) -> str:
        return rss(*[item(f"T{i}") for i in range(n // 60)], crash, head="",
                   pad=0).replace("<description></description>", "<a/>" * (n // 8), 1)

    small, large = doc(2000), doc(16000)
    assert len(parse(large).papers) == 16000 // 60
    ratio = _best_of_three(large) / max(_best_of_three(small), 0.002)
    assert ratio < 3 * 8, ratio


def test_entries_are_read_one_by_one_whatever_encoding_is_declared() -> None:
    crash = item("Bad", extra=CRASHES_FEEDPARSER)
    text = rss(item("Café"), crash).replace('encoding="UTF-8"', 'encoding="utf-16"')
    assert [p.title for p in parse(text).papers] == ["Café"]


# 5-7. arXiv: the API of late 2025, the RSS listings, API errors and empty results.

def parsed_json(path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["parse", "--json", "--date", "2025-11-04", str(path)]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_arxiv_api_links_go_to_the_abs_page_whichever_link_comes_first(
        capsys: pytest.CaptureFixture[str]) -> None:
    rows = parsed_json(LIVE / "arxiv_2025.xml", capsys)
    assert [(r["arxiv_id"], r["url"], r["links"], r["version"], r["revision"]) for r in rows] == [
        ("2511.01234", "https://arxiv.org/abs/2511.01234", ["https://arxiv.org/pdf/2511.01234v1"],
         1, False),
        ("2511.02345", "https://arxiv.org/abs/2511.02345", ["https://arxiv.org/pdf/2511.02345v2"],
         2, False),
        ("2511.03456", "https://arxiv.org/abs/2511.03456",
         ["https://arxiv.org/pdf/2511.03456v3", "https://doi.org/10.0000/example.crane"], 3, False),
    ]
    assert rows[0]["title"] == "Counting Pebbles with Sparse Attention Masks"
    assert [r["authors"] for r in rows] == [2, 1, 3]
    assert [r["date"] for r in rows] == ["2025-11-03", "2025-10-30", "2025-09-15"]
    assert [r["line"] for r in rows] == [10, 31, 47]  # each entry's <entry> line


def test_arxiv_api_over_plain_http_links_over_https() -> None:
    text = (LIVE / "arxiv_2025.xml").read_text(encoding="utf-8").replace(
        'href="https://arxiv.org/', 'href="http://arxiv.org/')
    papers = parse(text).papers
    assert [p.url for p in papers] == [f"https://arxiv.org/abs/2511.0{n}" for n in
                                       ("1234", "2345", "3456")]
    assert papers[0].links == ("https://arxiv.org/pdf/2511.01234v1",)


def test_arxiv_rss_prefix_authors_and_announce_types(capsys: pytest.CaptureFixture[str]) -> None:
    rows = parsed_json(LIVE / "arxiv_rss.xml", capsys)
    assert [(r["arxiv_id"], r["version"], r["revision"]) for r in rows] == [
        ("2411.01234", 1, False), ("2411.02345", 1, False), ("2409.03456", 2, True),
        ("2310.04567", 4, True)]
    assert rows[0]["abstract"] == ("Snails move slowly, so frame differencing misses them; we "
                                   "learn a motion prior that does not.")
    assert not any("Announce Type" in r["abstract"] or "arXiv:" in r["abstract"] for r in rows)
    assert [r["author_names"] for r in rows] == [
        ["Ada Shell", "Bruno Slime", "Carl Spiral, Jr.", "Dana Foot"],
        ["Eve Rain", "Finn Street"], ["Ines Harbour"], ["Kenji Fold", "Mara Crease", "Olu Pleat"]]
    assert [r["authors"] for r in rows] == [4, 2, 1, 3]
    assert all(r["url"] == f"https://arxiv.org/abs/{r['arxiv_id']}" for r in rows)


def test_a_blog_feed_keeps_comma_names_whole() -> None:
    doc = rss(item("Post", extra="<dc:creator>Smith, John</dc:creator>"))
    assert parse(doc).papers[0].author_names == ("Smith, John",)


def test_an_arxiv_api_error_is_an_input_error_not_a_paper(
        capsys: pytest.CaptureFixture[str]) -> None:
    path = LIVE / "arxiv_error.xml"
    with pytest.raises(InputError) as info:
        read_dump(path, today=DAY)
    assert str(info.value) == (f"{path}: the arXiv API answered with an error: incorrect id "
                               "format for 1234; fix the source's query")
    assert main(["parse", str(path)]) == 2
    assert "incorrect id format for 1234" in capsys.readouterr().err


def test_an_empty_arxiv_result_is_an_empty_listing() -> None:
    path = LIVE / "arxiv_empty.xml"
    text = path.read_text(encoding="utf-8")
    dump = feeds.parse(str(path), text, today=DAY)
    assert (dump.papers, dump.warnings, dump.shape) == ((), (), "feed")
    assert parse_text(str(path), text, today=DAY, allow_empty=True).papers == ()


def test_the_old_arxiv_fixture_still_reads_the_same() -> None:
    papers = read_dump(LIVE / "arxiv.xml", today=DAY).papers
    assert [(p.arxiv_id, p.version, p.url, p.authors) for p in papers] == [
        ("2611.00002", 2, "https://arxiv.org/abs/2611.00002", 1),
        ("2611.00006", 1, "https://arxiv.org/abs/2611.00006", 2)]


# 8. Anything feed-shaped gives papers or an InputError, and only XML-safe text.

_ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | \
    st.sampled_from(["&#0;", "&#xD800;", "&#1114112;", "&lt;a ", "&lt;!--", "]]>", "&amp;",
                     "\x01", "\ufffe", "arXiv:2411.01234v2 Announce Type: replace \nAbstract: x"])
_DATES = st.sampled_from(["2025-11-01T00:00:00Z", "0000-01-01T00:00:00Z", "99999-12-31",
                          "Mon, 04 Nov 2024 00:00:00 -0500", "yesterday", "", "2025-13-45"])
_LINKS = st.sampled_from(["https://arxiv.org/abs/2411.01234v3", "https://arxiv.org/pdf/2411.0",
                          "javascript:x", "http://a\x01b", "", "https://lab.example.org/p q",
                          "file:///etc/passwd", "https://huggingface.co/papers/2411.01234"])


def _xml_text(value: str) -> str:
    """Random text as element content: escaped, unless it is one of the raw snippets."""
    return value if value.startswith("&") else escape(value)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_ANY_TEXT, _ANY_TEXT, _ANY_TEXT, _DATES, _LINKS, _LINKS),
                max_size=6), st.booleans())
def test_any_feed_like_document_gives_papers_or_an_input_error(
        entries: list[tuple[str, str, str, str, str, str]], atom: bool) -> None:
    if atom:
        doc = ('<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>' + "".join(
            f"<entry><title>{_xml_text(t)}</title><summary>{_xml_text(s)}</summary>"
            f"<author><name>{_xml_text(a)}</name></author><published>{d}</published>"
            f'<link href="{escape(l1, {chr(34): "&quot;"})}"/><id>{escape(l2)}</id></entry>'
            for t, s, a, d, l1, l2 in entries) + "</feed>")
    else:
        doc = rss(*(item(_xml_text(t), _xml_text(s), escape(l1),
                         f"<dc:creator>{_xml_text(a)}</dc:creator><pubDate>{d}</pubDate>"
                         f"<guid>{escape(l2)}</guid>")
                    for t, s, a, d, l1, l2 in entries))
    try:
        parsed = parse(doc)
    except InputError:
        return
    skipped = [w for w in parsed.warnings if w.message.endswith("skipped")]
    assert len(parsed.papers) + len(skipped) == len(entries)  # none lost without a word
    for paper in parsed.papers:
        assert paper.title and all(xml_safe(s) for s in strings_of(paper))
        assert all(u.startswith(("http://", "https://")) for u in (paper.url, *paper.links)
                   if u)
        assert paper.version is None or paper.version > 0


CRASHES_FEEDPARSER = ('<category>cs.CV <feed xmlns="http://www.w3.org/2005/Atom"><entry>'
                      "<title>Inner</title></entry></feed> cs.GR</category>")


def test_markup_that_crashes_feedparser_costs_only_its_entry() -> None:
    """Found by bench/fuzz_parsers.py: a feed pasted inside an entry's category makes
    feedparser itself raise (KeyError), in its strict and its loose parser alike."""
    nested = ('<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>Inner</title>'
              "</entry></feed>")
    text = rss(item("One"), item("Two", extra=f"<category>cs.CV {nested} cs.GR</category>"),
               item("Three"))
    parsed = parse(text)
    assert [p.title for p in parsed.papers] == ["One", "Three"]
    assert ["entry 2 could not be read" in w.message for w in parsed.warnings] == [True]
