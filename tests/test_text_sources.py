"""Text and Markdown copies of papers pages: linear time, the Markdown parser, sniffing."""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from conftest import DATA, DUMP_DAY
from hypothesis import given, settings
from hypothesis import strategies as st

import digest.sources
from digest.errors import InputError
from digest.models import ParsedDump
from digest.sources import decode, hf_markdown, hf_text, parse_text
from digest.sources.markup import clean

SAVED = date(2026, 3, 10)
TEXT_SHAPES = {"blank-separated", "with-metadata", "compact"}
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
HEAD = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\n"


@pytest.fixture
def with_markdown() -> None:
    """The Markdown parser is registered, ahead of the text parser."""
    assert digest.sources.PARSERS[0] is hf_markdown


@pytest.fixture
def without_markdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser list as it was before Markdown copies were read."""
    monkeypatch.setattr(digest.sources, "PARSERS",
                        tuple(p for p in digest.sources.PARSERS if p is not hf_markdown))


def parse_str(text: str, name: str = "copy.md", today: date = SAVED) -> ParsedDump:
    return parse_text(name, decode(name, text.encode("utf-8")), today=today)


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# -- linear time ---------------------------------------------------------------------------

def _one_entry(abstract: str) -> str:
    return HEAD + "A Title\n\n" + abstract + "\n"


def _text_parse(make: Callable[[int], str]) -> Callable[[int], object]:
    def run(size: int) -> object:
        text = make(size)
        return hf_text.sniff(text), hf_text.parse("t.txt", text, today=SAVED)
    return run


def _markdown_parse(make: Callable[[int], str]) -> Callable[[int], object]:
    def run(size: int) -> object:
        text = make(size)
        try:
            return hf_markdown.sniff(text), hf_markdown.parse("t.md", text, today=SAVED)
        except InputError:
            return None
    return run


def _links(make: Callable[[int], str]) -> Callable[[int], object]:
    return lambda size: hf_text.extract_links(make(size))


# Each case builds an input of about ``size`` characters and reads it.
LINEAR_CASES: dict[str, Callable[[int], object]] = {
    "url then closing parentheses": _links(lambda n: "see https://a.org/x" + ")" * n),
    "url then full stops": _links(lambda n: "see https://a.org/x" + "." * n),
    "url then mixed brackets": _links(lambda n: "https://a.org/(x" + ").]" * (n // 3)),
    "many distinct urls": _links(lambda n: " ".join(f"https://a.org/{i}" for i in range(n // 16))),
    "parse: url then parentheses": _text_parse(lambda n: _one_entry("https://a.org/x" + ")" * n)),
    "parse: last abstract of many https://": _text_parse(
        lambda n: _one_entry("https://" * (n // 8) + " and more")),
    "parse: header junk between headers": _text_parse(
        lambda n: "".join(f"junk {i}\nnew\n" for i in range(n // 12)) + "T\n\n" + "A" * 400),
    "parse: long lines near headers": _text_parse(
        lambda n: ("x" * (n // 24) + "\nnew\n") * 12 + "T\n\n" + "A" * 400),
    "sniff+parse: markdown-looking text": _text_parse(
        lambda n: HEAD + "](https://huggingface.co/papers/" * (n // 34)),
    "markdown: open brackets": _markdown_parse(
        lambda n: "### [T](https://huggingface.co/papers/2401.00001)\n" + "[" * n),
    "markdown: escaped brackets": _markdown_parse(
        lambda n: "### [T](https://huggingface.co/papers/2401.00001)\n[" + "\\[" * (n // 2)),
    "markdown: links never closed": _markdown_parse(
        lambda n: "### [T](https://huggingface.co/papers/2401.00001)\n" + "[a](b \"" * (n // 7)),
    "markdown: images never closed": _markdown_parse(
        lambda n: "### [T](https://huggingface.co/papers/2401.00001)\n" + "![a](" * (n // 5)),
    "markdown: list markers": _markdown_parse(
        lambda n: "### [T](https://huggingface.co/papers/2401.00001)\n" + "- " * (n // 2)),
    "markdown: continued lines": _markdown_parse(
        lambda n: "### [T](https://huggingface.co/papers/2401.00001)\n" + "[x\\\n" * (n // 4)),
    "markdown: heading of spaces": _markdown_parse(
        lambda n: "# " + " " * n + "x\n### [T](https://huggingface.co/papers/2401.00001)\n"),
    "markdown: many entries": _markdown_parse(lambda n: "".join(
        f"### [T{i}](https://huggingface.co/papers/2401.{i:05d})\n\n* 3 authors\n\n· Nov 4\n\n"
        for i in range(n // 80))),
}


def best_time(run: Callable[[int], object], size: int) -> float:
    """The fastest of three runs, with the garbage collector out of the way."""
    times = []
    for _ in range(3):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run(size)
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(times)


def growth(run: Callable[[int], object], small: int = 16_000, factor: int = 8) -> float:
    """How much longer an input ``factor`` times larger takes (linear: about ``factor``)."""
    return best_time(run, small * factor) / max(best_time(run, small), 1e-6)


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_time_grows_linearly(case: str) -> None:
    ratio = growth(LINEAR_CASES[case])
    assert ratio < 24, f"{case}: 8x the input took {ratio:.1f}x the time"


def test_trimming_still_keeps_balanced_brackets() -> None:
    assert hf_text.extract_links("(see https://x.org/a_(b)).). and https://x.org/a_(b))") == (
        "https://x.org/a_(b)",)
    assert hf_text.extract_links("[https://x.org/[1]]].") == ("https://x.org/[1]",)
    assert hf_text.extract_links("https://").__len__() == 0


# -- sniffing: text dumps stay text, Markdown copies go to the Markdown parser -------------

TEXT_FIXTURES = ["shape_blank.txt", "shape_meta.txt", "shape_compact.txt", "hostile.txt"]
MD_FIXTURES = ["md_reader_listing.md", "md_scraper_search.md", "md_reader_paper.md"]


@pytest.mark.usefixtures("with_markdown")
def test_text_dumps_still_sniff_as_text(shared_dumps: list[Path]) -> None:
    for path in [*shared_dumps, *(DATA / n for n in TEXT_FIXTURES)]:
        text = path.read_text(encoding="utf-8")
        assert hf_markdown.sniff(text) == 0.0, path.name
        assert hf_text.sniff(text) >= 0.5, path.name
        assert parse_str(text, path.name, DUMP_DAY).shape in TEXT_SHAPES, path.name


@pytest.mark.parametrize("name", MD_FIXTURES)
def test_markdown_copies_sniff_as_markdown_never_as_text(name: str) -> None:
    text = read(name)
    assert hf_markdown.sniff(text) >= 0.9
    assert hf_text.sniff(text) < 0.5


@pytest.mark.usefixtures("without_markdown")
def test_unregistered_markdown_is_rejected_not_read_as_junk() -> None:
    with pytest.raises(InputError, match="not a page dump"):
        parse_str(read("md_reader_listing.md"))


# -- the Markdown parser on its fixtures ---------------------------------------------------

def summary(parsed: ParsedDump) -> list[tuple[object, ...]]:
    return [(p.line, p.arxiv_id, p.title, p.authors, p.published, p.upvotes, p.url)
            for p in parsed.papers]


@pytest.mark.usefixtures("with_markdown")
def test_reader_listing_gives_its_four_papers() -> None:
    parsed = parse_str(read("md_reader_listing.md"), "listing.md")
    assert parsed.shape == "markdown-listing"
    assert (parsed.page_date, parsed.page_date_raw) == (date(2025, 11, 5), "Nov 5")
    hf = "https://huggingface.co/papers/"
    assert summary(parsed) == [
        (26, "2411.01234", "Sparse Mixtures for Tiny Parsers", 5, date(2025, 11, 4), 52,
         hf + "2411.01234"),
        (42, "2411.02345", "Markdown Is Not Plain Text: Lessons from Scraped Listings", 12,
         date(2024, 10, 31), 7, hf + "2411.02345"),
        (57, "2410.09876", "Q&A over [Bracketed] Titles", 1, date(2025, 11, 2), None,
         hf + "2410.09876"),
        (71, "2411.00042", "Vote Counts Are Not Titles", 3, date(2025, 11, 5), 118,
         hf + "2411.00042"),
    ]
    first, second, third, _ = parsed.papers
    assert first.abstract.startswith("We train sparse mixtures of tiny experts")
    assert first.abstract.endswith("on every layout we tried.")
    assert second.abstract == (  # two source lines, one paragraph
        "Scraped listings carry images, votes and navigation between the lines that matter. "
        "We show that reading the structure of the markup, not the rhythm of the lines, "
        "recovers every entry.")
    assert third.abstract == ""
    assert first.key == "arxiv:2411.01234"
    assert parsed.warnings == ()


@pytest.mark.usefixtures("with_markdown")
def test_scraped_search_page_gives_its_four_papers() -> None:
    parsed = parse_str(read("md_scraper_search.md"), "search.md")
    assert parsed.shape == "markdown-listing"
    assert parsed.page_date == date(2026, 3, 3)
    hf = "https://huggingface.co/papers/"
    assert summary(parsed) == [
        (29, "2603.00111", "Tiny Parsers: A Field Guide", None, date(2026, 2, 27), 101,
         hf + "2603.00111"),
        (41, "2502.20999",
         "Wrapped Lines in Scraped Abstracts: Measuring How Converters Break Long Titles",
         3, date(2025, 2, 27), None, hf + "2502.20999"),
        (58, "2601.04444", "Médical Notes, Naïvely Parsed", 10, date(2026, 1, 8), 7,
         hf + "2601.04444"),
        (70, "2403.05555", "Search Results Are Listings Too", 9, date(2024, 3, 3), None,
         hf + "2403.05555"),
    ]
    guide, wrapped = parsed.papers[:2]
    assert guide.links == ("https://github.com/example/tiny-parsers",)
    assert wrapped.abstract == (
        "Converters wrap long abstracts and mark each break with a backslash. A reader that "
        "joins the lines again recovers the text as the authors wrote it, and one that does "
        "not splits every abstract into a dozen fragments that look like titles.")
    assert parsed.warnings == ()


@pytest.mark.usefixtures("with_markdown")
def test_paper_page_gives_one_paper_with_names_summary_and_links() -> None:
    parsed = parse_str(read("md_reader_paper.md"), "paper.md")
    assert parsed.shape == "markdown-paper-page"
    assert summary(parsed) == [
        (24, "2411.03456", "Reading Markup, Not Rhythm: Robust Parsers for Copied Pages", 3,
         date(2024, 11, 4), 29, "https://huggingface.co/papers/2411.03456")]
    paper = parsed.papers[0]
    assert paper.author_names == ("Ada Example", "Ben Sample", "Chloé Test")
    assert paper.summary.startswith("A parser that reads the markup")
    assert paper.abstract.startswith("Pages copied as Markdown carry thumbnails")
    assert "reads headings and links instead of the rhythm" in paper.abstract  # link text kept
    assert "](" not in paper.abstract and "Generated by" not in paper.abstract
    assert paper.links == ("https://github.com/example/markup-reader",
                           "https://arxiv.org/pdf/2411.03456", "https://example.org/markup-reader")
    assert parsed.warnings == ()  # the recommended papers in the comments are not papers


@pytest.mark.usefixtures("with_markdown")
@pytest.mark.parametrize("name", MD_FIXTURES)
def test_no_junk_line_becomes_a_paper(name: str) -> None:
    for p in parse_str(read(name)).papers:
        assert not re.search(r"\]\(|!\[|^\d+$|submitted by|authors?$|^[·•*-]", p.title, re.I)
        assert p.arxiv_id and p.url


@pytest.mark.parametrize("heading", [
    "### [![Image 3: thumbnail](https://cdn.example/t.png)](https://huggingface.co/papers/2401.00001)",
    "### [52](https://huggingface.co/papers/2401.00001)",
    "### [- 5 authors](https://huggingface.co/papers/2401.00001)",
    "### [Submitted by someone](https://huggingface.co/papers/2401.00001)",
    "### [·](https://huggingface.co/papers/2401.00001)",
])
def test_furniture_links_are_never_titles(heading: str) -> None:
    with pytest.raises(InputError, match="without paper links"):
        hf_markdown.parse("junk.md", heading + "\n\n* 5 authors\n\n· Nov 4\n", today=SAVED)


@pytest.mark.usefixtures("with_markdown")
def test_odd_line_in_an_entry_is_reported_with_its_line() -> None:
    lines = read("md_reader_listing.md").split("\n")
    at = lines.index("*   12 authors")
    lines.insert(at, "zzz odd")
    parsed = parse_str("\n".join(lines), "odd.md")
    assert len(parsed.papers) == 4
    assert [str(w).split(" warning: ")[0] for w in parsed.warnings] == [f"odd.md:{at + 1}:"]
    assert "unrecognised" in parsed.warnings[0].message


@pytest.mark.usefixtures("with_markdown")
def test_same_paper_twice_is_kept_once_with_a_warning() -> None:
    text = ("### [One Paper](https://huggingface.co/papers/2401.00001)\n\n"
            "### [One Paper, Again](https://arxiv.org/abs/2401.00001v2)\n")
    parsed = parse_str(text)
    assert [p.title for p in parsed.papers] == ["One Paper"]
    assert [(w.line, "same paper as line 1" in w.message) for w in parsed.warnings] == [(3, True)]


@pytest.mark.usefixtures("with_markdown")
def test_plain_list_of_paper_links() -> None:
    text = ("# My reading list\n\n"
            "- [Attention Over Links](https://arxiv.org/abs/2401.00001)\n"
            "- [Another Paper](https://huggingface.co/papers/2402.00002)\n"
            "- [a blog post](https://example.org/post)\n")
    parsed = parse_str(text)
    assert parsed.shape == "markdown-links"
    assert [(p.title, p.arxiv_id, p.url) for p in parsed.papers] == [
        ("Attention Over Links", "2401.00001", "https://arxiv.org/abs/2401.00001"),
        ("Another Paper", "2402.00002", "https://huggingface.co/papers/2402.00002")]


@pytest.mark.usefixtures("with_markdown")
@pytest.mark.parametrize("text", [
    "Title: Daily Papers\nURL Source: https://huggingface.co/papers\nMarkdown Content:\n"
    "Top trending papers of the day.\n",
    "Title: Daily Papers\n\nURL Source: https://huggingface.co/papers\n\nMarkdown Content:\n"
    "### Some Title Without A Link\n\n[Trending](https://huggingface.co/papers/trending)\n",
])
def test_markdown_copy_without_paper_links_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_str(text, "copy.md")
    message = str(info.value)
    assert message.startswith("copy.md: ")
    assert "without paper links" in message and "save the page as text" in message


def test_markdown_without_paper_links_is_not_claimed() -> None:
    text = "# Notes\n\nSee [the docs](https://example.org/docs) and [this](https://x.org).\n"
    assert hf_markdown.sniff(text) == 0.0
    with pytest.raises(InputError, match="without paper links"):
        hf_markdown.parse("notes.md", text, today=SAVED)


# -- property tests ------------------------------------------------------------------------

def assert_xml_safe(parsed: ParsedDump) -> None:
    assert parsed.papers
    for p in parsed.papers:
        assert p.title and "\n" not in p.title and "\n" not in p.abstract
        strings = [p.title, p.abstract, p.summary, p.url or "", *p.links, *p.author_names]
        assert not any(XML_ILLEGAL.search(s) for s in strings), p


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=2000))
def test_any_text_gives_papers_or_an_input_error(text: str) -> None:
    try:
        parsed = hf_markdown.parse("any.md", text, today=SAVED)
    except InputError:
        return
    assert_xml_safe(parsed)


MARKDOWN_BITS = st.sampled_from([
    "### [", "](https://huggingface.co/papers/2401.00001)", "](https://arxiv.org/abs/2402.0002",
    "[", "]", "(", ")", "![", "\\", "\n", "\n\n", "* ", "- ", "# ", "· Nov 4", "3 authors",
    "Submitted by", "42", "[- [x] Upvote 7](https://huggingface.co/login?next=%2Fpapers%2F24",
    "01.00001)", "Title: x\nURL Source: https://huggingface.co/papers/2401.00001\n",
    "Markdown Content:\n", "## Abstract\n", "Authors:\n", " Generated by x\n", "\x00", "\x0b",
    "\ufffe", "é", " ",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(MARKDOWN_BITS, st.text(max_size=12)), max_size=60))
def test_markdown_like_text_gives_papers_or_an_input_error(bits: list[str]) -> None:
    try:
        parsed = hf_markdown.parse("bits.md", "".join(bits), today=SAVED)
    except InputError:
        return
    assert_xml_safe(parsed)


def md_escape(text: str) -> str:
    """Escape link text the way HTML-to-Markdown converters do."""
    return re.sub(r"([\\\[\]*_`#<>])", r"\\\1", text)


def is_title(text: str) -> bool:
    """Generated text that is a title, not page furniture (a bare count, a symbol)."""
    low = clean(text).casefold()
    return sum(c.isalpha() for c in low) >= 3 and "submitted by" not in low \
        and not low.startswith("arxiv:")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                        min_size=1, max_size=80).filter(is_title), min_size=1, max_size=8))
def test_generated_listings_round_trip(titles: list[str]) -> None:
    body = "".join(
        f"[![Image {i}](https://cdn.example/{i}.png)](https://huggingface.co/papers/2401.{i:05d})"
        f"\n\n### [{md_escape(t)}](https://huggingface.co/papers/2401.{i:05d})\n\n"
        f"*   {i + 1} authors\n\nSubmitted by someone\n\n· Nov 4\n\n{i * 3}\n\n"
        for i, t in enumerate(titles))
    parsed = hf_markdown.parse("gen.md", "Title: Daily Papers\n\nURL Source: "
                               "https://huggingface.co/papers\n\nMarkdown Content:\n" + body,
                               today=SAVED)
    assert [p.title for p in parsed.papers] == [clean(t) for t in titles]
    assert [(p.authors, p.upvotes) for p in parsed.papers] == [
        (i + 1, i * 3) for i in range(len(titles))]
    assert all(p.published == date(2025, 11, 4) for p in parsed.papers)


@pytest.mark.usefixtures("with_markdown")
def test_a_malformed_link_host_costs_nothing() -> None:
    """Found by bench/fuzz_parsers.py: urlsplit raises on an unclosed IPv6 bracket."""
    text = read("md_scraper_search.md")
    vote = "[7](https://huggingface.co/login?next="
    assert vote in text
    text = text.replace(vote, "[7](https://huggi[ngface.co/login?next=", 1)
    parsed = parse_str(text, "search.md")
    assert len(parsed.papers) == len(parse_str(read("md_scraper_search.md")).papers) > 0
