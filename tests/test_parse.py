"""Parsing page dumps: the real shared dumps, the three shapes and perturbations."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from conftest import DATA, DUMP_DAY
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import InputError
from digest.models import ParsedDump
from digest.sources import decode, parse_text, read_dump
from digest.sources.hf_text import extract_links, resolve_date

EXPECTED = [
    (103, "blank-separated"), (35, "with-metadata"), (61, "compact"),
    (104, "blank-separated"), (87, "blank-separated"),
]


def parse_str(text: str, name: str = "dump.txt", today: date = DUMP_DAY) -> ParsedDump:
    return parse_text(name, decode(name, text.encode("utf-8")), today=today)


def test_real_dumps_counts_and_shapes(shared_dumps: list[Path]) -> None:
    for path, (count, shape) in zip(shared_dumps, EXPECTED, strict=True):
        parsed = read_dump(path, today=DUMP_DAY)
        assert (len(parsed.papers), parsed.shape) == (count, shape), path.name
        assert parsed.warnings == (), [str(w) for w in parsed.warnings]
        assert all(p.title and p.abstract for p in parsed.papers)


def test_real_dumps_distinct_papers_and_overlap(shared_dumps: list[Path]) -> None:
    seen: Counter[str] = Counter()
    for path in shared_dumps:
        seen.update({p.key for p in read_dump(path, today=DUMP_DAY).papers})
    assert len(seen) == 318
    assert Counter(seen.values()) == {1: 260, 2: 48, 3: 6, 4: 4}


def test_metadata_shape_fields(shared_dumps: list[Path]) -> None:
    parsed = read_dump(shared_dumps[1], today=DUMP_DAY)
    assert parsed.page_date_raw == "Dec 19"
    assert parsed.page_date == date(2025, 12, 19)  # latest Dec 19 not after the save day
    first = parsed.papers[0]
    assert first.title == "CLIP with Quality Captions: A Strong Pretraining for Vision Tasks"
    assert (first.authors, first.published, first.date_raw) == (4, date(2024, 5, 14),
                                                                "May 14, 2024")
    assert first.line == 13 and first.source == str(shared_dumps[1])
    second = parsed.papers[1]  # "Nov 4": yearless, resolved against the page date
    assert (second.date_raw, second.published) == ("Nov 4", date(2025, 11, 4))
    by_title = {p.title: p for p in parsed.papers}
    mobile = by_title["MobileCLIP: Fast Image-Text Models through Multi-Modal Reinforced Training"]
    assert (mobile.date_raw, mobile.published, mobile.upvotes) == ("Nov 28, 2023 1",
                                                                    date(2023, 11, 28), 1)


def test_compact_shape_splits_title_glued_to_subscribe(shared_dumps: list[Path]) -> None:
    parsed = read_dump(shared_dumps[2], today=DUMP_DAY)
    title = "CLIP-ReIdent: Contrastive Training for Player Re-Identification"
    assert parsed.papers[0].title == title
    assert parsed.papers[0].line == 3
    assert parsed.page_date is None


def test_links_are_extracted_without_trailing_punctuation(shared_dumps: list[Path]) -> None:
    parsed = read_dump(shared_dumps[4], today=DUMP_DAY)
    assert parsed.papers[0].links == ("https://github.com/keyu-tian/SparK",)
    assert extract_links("see https: //github.com/a/b). And (https://x.org/y_(z)).") == (
        "https://github.com/a/b", "https://x.org/y_(z)")


@pytest.mark.parametrize("name", ["shape_blank.txt", "shape_meta.txt", "shape_compact.txt"])
def test_own_fixtures_in_each_shape(name: str) -> None:
    parsed = read_dump(DATA / name, today=date(2026, 3, 10))
    assert [p.title for p in parsed.papers][:2] == [
        "Tiny Benchmarks for Parser Testing", "Contrastive Pretraining with CLIP on Curated Data"]
    assert len(parsed.papers) == 4 and not parsed.warnings
    assert parsed.papers[2].title.startswith("Médical Imaging: A Naïve Baseline")


def test_metadata_fixture_dates_and_leap_day() -> None:
    parsed = read_dump(DATA / "shape_meta.txt", today=date(2026, 3, 10))
    assert parsed.page_date == date(2026, 3, 3)
    dates = [(p.authors, p.published, p.upvotes) for p in parsed.papers]
    assert dates == [(3, date(2025, 11, 4), None), (12, date(2024, 5, 14), None),
                     (1, date(2023, 9, 21), 7), (5, date(2024, 2, 29), None)]
    assert resolve_date(2, 29, None, date(2026, 3, 1)) == date(2024, 2, 29)


def perturb(text: str, how: str) -> str:
    lines = text.split("\n")
    if how == "crlf":
        return "\r\n".join(lines)
    if how == "bom":
        return "\ufeff" + text
    if how == "tabs":
        return "\n".join(("\t" + x.replace(" ", "\t", 1)) if x else x for x in lines)
    if how == "trailing":
        return "\n".join(x + "   " for x in lines)
    if how == "nonascii":
        return text.replace("CLIP", "CLÏP—ψ")
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["crlf", "bom", "tabs", "trailing", "nonascii"])
def test_perturbations_parse_the_same(shared_dumps: list[Path], how: str) -> None:
    for path, (count, shape) in zip(shared_dumps, EXPECTED, strict=True):
        text = path.read_text(encoding="utf-8")
        base = parse_str(text, path.name)
        changed = parse_str(perturb(text, how), path.name)
        assert (len(changed.papers), changed.shape) == (count, shape), (path.name, how)
        assert changed.warnings == ()
        expect = [p.title for p in base.papers]
        if how == "nonascii":
            expect = [t.replace("CLIP", "CLÏP—ψ") for t in expect]
        assert [p.title for p in changed.papers] == expect
        assert [p.line for p in changed.papers] == [p.line for p in base.papers]


def test_truncated_last_entry_mid_abstract_warns_and_keeps(shared_dumps: list[Path]) -> None:
    text = shared_dumps[0].read_text(encoding="utf-8")
    cut = text[: len(text) - 300]  # inside the last abstract
    parsed = parse_str(cut, "cut.txt")
    assert len(parsed.papers) == 103
    assert len(parsed.warnings) == 1
    last_line = cut.count("\n") + 1
    assert str(parsed.warnings[0]).startswith(f"cut.txt:{last_line}: warning:")
    assert "truncated" in str(parsed.warnings[0])


def test_cut_after_a_title_skips_that_title_with_a_warning(shared_dumps: list[Path]) -> None:
    text = shared_dumps[3].read_text(encoding="utf-8")
    lines = text.split("\n")
    parsed = parse_str("\n".join(lines[:-2]), "cut.txt")  # drop blank + last abstract
    assert len(parsed.papers) == 103  # the title may itself be cut: it waits for a full dump
    assert [(w.line, "cut off" in w.message) for w in parsed.warnings] == [(len(lines) - 2,
                                                                             True)]
    half = parse_str("\n".join(lines[:-2])[:-20], "cut.txt")  # cut inside that title
    assert [p.title for p in half.papers] == [p.title for p in parsed.papers]


def test_truncated_metadata_entry_warns(shared_dumps: list[Path]) -> None:
    lines = shared_dumps[1].read_text(encoding="utf-8").split("\n")
    parsed = parse_str("\n".join(lines[:-3]), "cut.txt")  # no authors/date for the last
    assert len(parsed.papers) == 35
    assert parsed.papers[-1].authors is None
    assert any("truncated" in w.message for w in parsed.warnings)


@pytest.mark.parametrize("index", [0, 3, 4])
def test_unrecognised_line_warns_and_keeps_every_paper(shared_dumps: list[Path],
                                                       index: int) -> None:
    path = shared_dumps[index]
    text = path.read_text(encoding="utf-8")
    base = parse_str(text, path.name)
    lines = text.split("\n")
    at = base.papers[10].line - 1  # just before the 11th title
    lines.insert(at, "Load more papers")
    parsed = parse_str("\n".join(lines), path.name)
    assert [p.title for p in parsed.papers] == [p.title for p in base.papers]
    assert [(w.line, "unrecognised" in w.message) for w in parsed.warnings] == [(at + 1, True)]


def test_junk_metadata_line_warns(shared_dumps: list[Path]) -> None:
    lines = shared_dumps[1].read_text(encoding="utf-8").split("\n")
    lines.insert(16, "• something odd")  # inside the first entry's metadata block
    parsed = parse_str("\n".join(lines), "odd.txt")
    assert len(parsed.papers) == 35
    assert [w.line for w in parsed.warnings] == [17]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a page dump"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    (b"caf\xe9 au lait\n", "not UTF-8"),
    ((DATA / "not_a_dump.txt").read_bytes(), "not a page dump"),
    (b"new\n\nGet trending papers in your email inbox!\n\nSubscribe\n", "no papers found"),
    (b"<html><body>Nothing to see</body></html>", "no papers found in this hf-page"),
    (b'{"items": 5}', "JSON without a list of papers"),  # ("[]" is an empty listing)
])
def test_not_a_dump_is_an_error_naming_the_file(tmp_path: Path, content: bytes,
                                                message: str) -> None:
    path = tmp_path / "odd.txt"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_dump(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=2000))
def test_any_text_gives_papers_or_an_input_error(text: str) -> None:
    try:
        parsed = parse_str(text)
    except InputError:
        return
    assert parsed.papers
    for p in parsed.papers:
        assert p.title and "\n" not in p.title and "\x00" not in p.title + p.abstract


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
            min_size=1, max_size=80).filter(lambda s: s.strip() and s.strip()[-1] not in ".!?"),
    st.integers(min_value=0, max_value=10**6)), min_size=1, max_size=8))
def test_generated_dumps_round_trip(entries: list[tuple[str, int]]) -> None:
    titles = [" ".join(t.split()) for t, _ in entries]
    body = "\n\n".join(
        f"Paper {i} {t}\n\nAbstract {n}. " + "This sentence pads the abstract out. " * 9
        for i, (t, n) in enumerate(entries))
    text = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\n" + body
    parsed = parse_str(text)
    assert [p.title for p in parsed.papers] == [f"Paper {i} {t}".strip() if t else f"Paper {i}"
                                               for i, t in enumerate(titles)]


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("junk", ["Hugging Face", "Upvote", "Submitted by someone", "42"])
def test_junk_in_the_page_header_is_skipped_with_a_warning(shared_dumps: list[Path], index: int,
                                                           junk: str) -> None:
    path = shared_dumps[index]
    text = path.read_text(encoding="utf-8")
    base = parse_str(text, path.name)
    for at in (0, 1):  # before everything, and after the first header line
        lines = text.split("\n")
        lines.insert(at, junk)
        parsed = parse_str("\n".join(lines), path.name)
        assert [p.title for p in parsed.papers] == [p.title for p in base.papers], (junk, at)
        assert parsed.page_date == base.page_date
        assert [w.line for w in parsed.warnings] == [at + 1]


@pytest.mark.parametrize("title", [
    "U.S. vs. E.U. Rules for AI: A Comparison",
    "Is Attention All You Need? No! Maybe? A Study",
    "Mar 10",
    "5 Authors Walk into a Lab",
    "-",
    "· Dots Everywhere",
])
@pytest.mark.parametrize("name", ["shape_blank.txt", "shape_meta.txt", "shape_compact.txt"])
def test_odd_titles_are_kept_in_every_shape(name: str, title: str) -> None:
    text = (DATA / name).read_text(encoding="utf-8").replace(
        "Video Diffusion Models Without Tears", title)
    parsed = parse_str(text, name, today=date(2026, 3, 10))
    assert [p.title for p in parsed.papers][3] == title
    assert len(parsed.papers) == 4 and not parsed.warnings
