"""What every source shares: ranking text in linear time, boilerplate that is not the
paper's, and structured listings that are simply empty."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from conftest import Project, dated
from timing import assert_linear

from digest.cli import main
from digest.models import Keyword, Paper
from digest.rank import Corpus, analyse, highlight_spans, score_all
from digest.sources import parse_text

DAY = date(2026, 11, 23)


# -- 3. quadratic patterns in ranking --------------------------------------------------------

def _long_words(n: int) -> str:
    """A long run of letters with a hyphen somewhere: the old compound pattern rescanned
    the rest of every word from each of its letters."""
    return ("x" * 2000 + " ") * (n // 2000) + "-"


def test_analysing_long_words_is_linear() -> None:
    assert_linear(lambda n: lambda: analyse(_long_words(n)), 2000)


def test_analysing_words_with_inner_apostrophes_is_linear() -> None:
    # a compound pattern that may start after any apostrophe rescans the rest each time
    assert_linear(lambda n: lambda: analyse("a’" * n + "-b"), 2000)
    assert_linear(lambda n: lambda: analyse("a’b-" * n), 2000)


def test_highlighting_long_words_is_linear() -> None:
    kws = (Keyword("pre-training"),)
    # highlight_spans is cached by text: every call gets a new text of the same size
    counter = iter(range(10**6))

    def work(n: int) -> object:
        return lambda: highlight_spans(_long_words(n) + str(next(counter)), kws)

    assert_linear(work, 2000)


def test_a_crafted_dump_ranks_in_linear_time(tmp_path: Path) -> None:
    """The whole `digest rank` path over a dump of long hyphen-free words."""
    def work(n: int) -> object:
        body = "\n\n".join(f"Title number {i}\n\n{_long_words(n // 8)} end." for i in range(8))
        path = tmp_path / f"crafted{n}.txt"
        path.write_text("Daily Papers\n\nSubscribe\n\n" + body + "\n", encoding="utf-8")
        return lambda: main(["rank", str(path), "-k", "pre-training", "--json"])

    assert_linear(work, 16000)


def test_compounds_still_match_either_way() -> None:
    stems, joined, _ = analyse("Self-supervised pre‑training of ViT-B models")
    assert "pretrain" in joined and "selfsupervis" in joined and "train" in stems
    papers = [Paper(key=f"title:{t}", title=t, abstract="") for t in
              ("Pre-training at scale", "Pretraining at scale", "Training at scale")]
    got = {r.paper.title for r in score_all(Corpus.build(papers), [Keyword("pretraining")])
           if r.matches}
    assert got == {"Pre-training at scale", "Pretraining at scale"}


# -- 14. boilerplate common to every entry ---------------------------------------------------

CARD_TAIL = "Download PDF · Add to Selected Citations"


def _card_feed(n: int) -> str:
    items = "".join(
        f"<item><title>Cell study number {i}</title>"
        f"<link>https://journal.example.org/a/{i}</link>"
        f"<description>Journal of Cells, vol {i}. We grow cell line {i} in new media and "
        f"measure growth rate {i * 3}. {CARD_TAIL}</description></item>"
        for i in range(n))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Cards</title>'
            f"<link>https://journal.example.org/</link>{items}</channel></rss>")


def test_boilerplate_in_every_entry_is_removed_before_ranking(tmp_path: Path) -> None:
    path = tmp_path / "cards.xml"
    path.write_text(_card_feed(6), encoding="utf-8")
    parsed = parse_text(str(path), path.read_text(encoding="utf-8"), today=DAY)
    assert len(parsed.papers) == 6
    assert not any("Citations" in p.abstract or "Download PDF" in p.abstract
                   for p in parsed.papers)
    # a phrase every abstract shares inside its own text is the papers' and stays
    assert all(re.search(r"cell line \d+ in new media and measure", p.abstract)
               for p in parsed.papers)
    assert any("every entry" in w.message for w in parsed.warnings)
    ranked = score_all(Corpus.build(list(parsed.papers)), [Keyword("citation")])
    assert ranked == []


def test_boilerplate_is_found_at_both_ends_of_long_abstracts() -> None:
    from digest.models import ParsedDump
    from digest.sources import strip_boilerplate

    def body(i: int) -> str:  # each paper's own words, longer than both edges together
        return " ".join(f"w{i}x{j}" for j in range(400))

    papers = tuple(Paper(key=f"k{i}", title=f"Paper {i}",
                         abstract=f"Journal of Cells header. {body(i)} {CARD_TAIL}")
                   for i in range(5))
    dump = strip_boilerplate(ParsedDump("d.txt", "0", "text", None, None, papers))
    for i, p in enumerate(dump.papers):
        assert p.abstract == body(i)


def test_boilerplate_stays_when_entries_are_too_few_or_differ(tmp_path: Path) -> None:
    few = parse_text("few.xml", _card_feed(3), today=DAY)
    assert all(CARD_TAIL.split(" · ")[1] in p.abstract for p in few.papers)
    mixed = _card_feed(6).replace(CARD_TAIL, "", 1)  # one entry lacks the tail
    parsed = parse_text("mixed.xml", mixed, today=DAY)
    assert sum("Add to Selected Citations" in p.abstract for p in parsed.papers) == 5


def test_real_dumps_lose_nothing_to_boilerplate(shared_dumps: list[Path]) -> None:
    for path in shared_dumps:
        text = path.read_text(encoding="utf-8")
        parsed = parse_text(str(path), text, today=DAY)
        assert not any("every entry" in w.message for w in parsed.warnings), path.name


# -- 10. an empty structured listing is no papers, not an error -------------------------------

EMPTY_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"
      xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
  <link href="http://arxiv.org/api/query?search_query=ti:nothing" rel="self"
        type="application/atom+xml"/>
  <title type="html">ArXiv Query: search_query=ti:nothing</title>
  <id>http://arxiv.org/api/empty-query-id</id>
  <updated>2026-11-23T00:00:00-05:00</updated>
  <opensearch:totalResults>0</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>
  <opensearch:itemsPerPage>50</opensearch:itemsPerPage>
</feed>
"""


@pytest.mark.parametrize("name,text", [("empty.xml", EMPTY_FEED), ("empty.json", "[]\n")])
def test_empty_listing_in_the_inbox_is_nothing_new(project: Project, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   name: str, text: str) -> None:
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    assert main(["parse", str(source), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    dated(project.drop(source))
    assert main(["run", "--config", str(project.config_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["new_papers"] == 0 and report["rejected"] == []


def test_an_empty_text_dump_is_still_an_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("Daily Papers\n\nSubscribe\n\n", encoding="utf-8")
    assert main(["parse", str(path)]) == 2
    assert "blank.txt" in capsys.readouterr().err


# -- invisible characters in what reaches a reader --------------------------------------------

@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\ufeff", "\u00ad", "\u061c"])
def test_no_href_carries_an_invisible_character(char: str) -> None:
    from digest.render import safe_url

    assert safe_url(f"https://example.com/{char}gpj.exe") is None
    assert safe_url("https://example.com/exe.jpg") == "https://example.com/exe.jpg"


def test_bidirectional_overrides_never_reach_a_digest() -> None:
    from digest.render import clean_text

    assert clean_text("Harmless \u202etxt.exe title\u2066") == "Harmless txt.exe title"
