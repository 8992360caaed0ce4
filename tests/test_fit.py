"""The e-mail that fits: abstracts trimmed around the matches, and a digest too large for
Gmail's 102 KB clip cut (abstracts first, then papers from the bottom) in O(log n) renders."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, date, datetime

import pytest
from test_output import dangers

from digest.config import SmtpConfig
from digest.fit import FitPlan, fit_html, html_size
from digest.links import links_for
from digest.mail import Unsubscribe, build_message, inline_css, wire_bytes
from digest.models import Digest, Keyword, Match, Paper, Profile, Ranked
from digest.render import (
    ELLIPSIS,
    Renderer,
    authors,
    excerpt_html,
    excerpt_md,
    excerpt_window,
    sentence_spans,
)

KEYWORDS = (Keyword("CLIP"), Keyword("data curation"))
SITE = "https://digest.example.org/"
ISSUE_URL = f"{SITE}ana/0007-2026-11-23.html"
FILLER = [
    "Large vision-language models are trained on billions of noisy image-text pairs "
    "scraped from the web, and their quality depends heavily on the mixture.",
    "Prior work filters such pairs with heuristics that are hard to tune and transfer "
    "poorly across domains, languages and downstream tasks.",
    "We evaluate on thirty-eight benchmarks covering retrieval, zero-shot "
    "classification, segmentation and visual question answering.",
    "Our ablations show that the gains persist across model scales from 50M to 2B "
    "parameters and across three different training budgets.",
    "We further analyse failure cases and find that most remaining errors come from "
    "captions that describe text rendered inside the image.",
    "Code, filtered subsets and trained checkpoints are released to the community.",
]
MATCHED = ("We propose a data curation method that scores each pair with a small CLIP model "
           "and keeps only the most informative ones.")


def paper(i: int, *, names: int = 5) -> Paper:
    sentences = [*FILLER[:3], MATCHED, *FILLER[3:]]
    return Paper(key=f"arxiv:2411.{i:05d}", title=f"Paper {i}: CLIP data curation at scale",
                 abstract=" ".join(sentences), authors=names,
                 author_names=tuple(f"Author{j} Surname{i}" for j in range(names)),
                 published=date(2024, 11, 20), upvotes=i % 40,
                 url=f"https://arxiv.org/abs/2411.{i:05d}",
                 links=(f"https://arxiv.org/pdf/2411.{i:05d}",
                        f"https://github.com/lab{i}/clip-curation"),
                 summary="A small CLIP scores pairs; the best ones are kept.")


def digest_of(n: int, others: int = 30) -> Digest:
    profile = Profile("ana", "ana@example.org", keywords=KEYWORDS, max_items=n)
    items = tuple(Ranked(paper(i), 10.0 - i / 100, (Match("CLIP", 1.0, 1, 2, 3.0),
                                                     Match("data curation", 1.0, 1, 1, 2.0)),
                         i)
                  for i in range(1, n + 1))
    rest = tuple(Paper(f"other{i}", f"Other paper {i}", "An abstract.",
                       url=f"https://arxiv.org/abs/2411.9{i:04d}") for i in range(others))
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    return Digest("Test digest", profile, 7, now, None, now, n + others, items, rest,
                  others + 5, feed_url=f"{SITE}feeds/ana.atom")


RENDERER = Renderer()
LINKS = links_for(SITE, b"k" * 32, "ana")
UNSUB = LINKS.unsubscribe if LINKS else None


def mail_html(digest: Digest, plan: FitPlan) -> str:
    return RENDERER.html_page(digest, UNSUB, LINKS, mail=True, plan=plan)


def titles(html: str) -> list[str]:
    return re.findall(r"<h3[^>]*>(\d+)\. ", html)


def test_a_200_paper_mail_fits_gmail_with_the_cut_said_and_the_top_intact() -> None:
    digest = digest_of(200)
    calls: list[FitPlan] = []

    def render(d: Digest, plan: FitPlan) -> str:
        calls.append(plan)
        return mail_html(d, plan)

    html, plan = fit_html(digest, render, more_url=ISSUE_URL)
    sent = inline_css(html)
    wire = (sent + "\n").replace("\n", "\r\n").encode()  # as the part is sent and decoded
    assert html_size(html) == len(wire) == plan.size <= 100_000
    assert plan.cut and plan.dropped_items > 0 and plan.items > 20
    assert plan.abstracts <= plan.items and plan.total == 200
    assert len(calls) <= 3 * 9 + 1  # binary searches, never one render per paper
    assert titles(sent) == [str(i) for i in range(1, plan.items + 1)]
    more = plan.total - plan.items
    assert f'<a href="{ISSUE_URL}"' in sent and f"{more} more on the web</a>" in sent
    assert "Unsubscribe</a>" in sent[-3000:]  # the foot survives, below the cut note
    assert sent.count("data-feedback=\"like\"") == plan.items  # every kept paper votable
    assert dangers(sent.split("<body", 1)[1]) == []
    first = sent.split("<h3", 2)[1]  # paper 1: abstract (trimmed), links, votes
    assert "In short:" in first and "Read more</a>" in first
    assert "https://github.com/lab1/clip-curation" in first
    assert "without their abstracts" in sent
    last = sent.rsplit("<h3", 1)[1]
    assert "Read more" not in last and "In short" not in last and "👍" in last
    described = plan.describe()
    assert described.startswith(f"{plan.dropped_abstracts} papers shown without abstracts, "
                                f"{more} of 200 papers left out (on the web issue page); ")


def test_the_sent_message_part_is_what_was_measured() -> None:
    digest = digest_of(200)
    html, plan = fit_html(digest, mail_html, more_url=ISSUE_URL)
    text = RENDERER.markdown(digest, UNSUB, LINKS, mail=True, plan=plan)
    smtp = SmtpConfig("127.0.0.1", 25, "none", "digest@example.org")
    msg = build_message(digest, text, html, smtp, "example.org", Unsubscribe(UNSUB, None), "s")
    parsed = email.message_from_bytes(wire_bytes(msg), policy=email.policy.default)
    part = parsed.get_payload()[1]  # type: ignore[index]
    assert len(part.get_content().encode()) == plan.size <= 100_000


def test_without_a_web_page_the_rest_are_in_the_feed() -> None:
    html, plan = fit_html(digest_of(200), mail_html)
    assert plan.more_url is None and plan.dropped_items
    assert f"{plan.dropped_items} more in the <a href=\"{SITE}feeds/ana.atom\">feed</a>" in html
    assert "Also new (35)" in html and "Other paper 1<" not in html  # titles left out too


def test_a_20_paper_mail_is_not_cut_but_its_abstracts_are_trimmed() -> None:
    digest = digest_of(20)
    calls = 0

    def render(d: Digest, plan: FitPlan) -> str:
        nonlocal calls
        calls += 1
        return mail_html(d, plan)

    html, plan = fit_html(digest, render, more_url=ISSUE_URL)
    assert calls == 1 and not plan.cut and plan.size <= 100_000
    assert titles(html) == [str(i) for i in range(1, 21)]
    assert "more on the web" not in html and "without their abstracts" not in html
    assert html.count("Read more</a>") == 20 and "Other paper 29" in html
    assert FILLER[-1] not in html  # the last sentence is far from the match: cut
    assert "<mark>data curation</mark> method that scores" in html


def test_the_file_and_the_site_page_keep_whole_abstracts() -> None:
    digest = digest_of(3)
    page = RENDERER.html_page(digest, None, LINKS)
    text = RENDERER.markdown(digest, None, LINKS)
    assert FILLER[-1] in page and FILLER[-1] in text
    assert "Read more" not in page and "Read more" not in text
    assert ELLIPSIS not in page


def test_the_markdown_mail_follows_the_same_plan() -> None:
    digest = digest_of(200)
    _, plan = fit_html(digest, mail_html, more_url=ISSUE_URL)
    text = RENDERER.markdown(digest, UNSUB, LINKS, mail=True, plan=plan)
    assert len(re.findall(r"^### \d+\. ", text, re.M)) == plan.items
    assert f"{plan.dropped_items} more on the web: <{ISSUE_URL}>" in text
    assert text.count("[Read more](<https://arxiv.org/abs/") == plan.abstracts
    assert FILLER[-1] not in text


def test_nothing_fits_returns_the_smallest_and_says_so() -> None:
    html, plan = fit_html(digest_of(5), mail_html, limit=1_000)
    assert (plan.items, plan.abstracts) == (0, 0) and plan.size > 1_000
    assert "5 more in the" in html and "still over" in plan.describe()


def test_abstracts_go_before_papers() -> None:
    digest = digest_of(40)
    whole = html_size(mail_html(digest, FitPlan.whole(digest)))
    _, plan = fit_html(digest, mail_html, limit=whole - 500)
    assert plan.items == 40 and 0 < plan.dropped_abstracts <= 2  # the bottom ones only


# --- the trim -------------------------------------------------------------------------

ABSTRACT = ("Vision models need data. Most data is noisy, e.g. alt text. We study it in "
            "Fig. 2 of the appendix. Here CLIP scores every pair. The best pairs are kept "
            "by data curation. It helps. We release code.")


def test_sentences_split_at_full_stops_but_not_abbreviations() -> None:
    parts = [ABSTRACT[a:b] for a, b in sentence_spans(ABSTRACT)]
    assert parts == ["Vision models need data.", "Most data is noisy, e.g. alt text.",
                     "We study it in Fig. 2 of the appendix.", "Here CLIP scores every pair.",
                     "The best pairs are kept by data curation.", "It helps.",
                     "We release code."]


def test_the_trim_keeps_the_three_sentences_with_the_most_matches() -> None:
    lo, hi = excerpt_window(ABSTRACT, KEYWORDS)  # ties: centred on the matches, earliest
    assert ABSTRACT[lo:hi] == ("We study it in Fig. 2 of the appendix. Here CLIP scores every "
                               "pair. The best pairs are kept by data curation.")
    one = " ".join([*FILLER[:3], MATCHED, *FILLER[3:]])
    lo, hi = excerpt_window(one, KEYWORDS)  # one matching sentence: with one on each side
    assert one[lo:hi] == " ".join([FILLER[2], MATCHED, FILLER[3]])
    more = ABSTRACT.replace("It helps.", "CLIP helps.")
    lo, hi = excerpt_window(more, KEYWORDS)
    assert more[lo:hi] == ("Here CLIP scores every pair. The best pairs are kept by data "
                           "curation. CLIP helps.")
    part = excerpt_html(more, KEYWORDS)
    assert part.cut and part.text == (
        f"{ELLIPSIS} Here <mark>CLIP</mark> scores every pair. The best pairs are kept by "
        f"<mark>data curation</mark>. <mark>CLIP</mark> helps. {ELLIPSIS}")
    md = excerpt_md(more, KEYWORDS)
    assert md.text.startswith(f"{ELLIPSIS} Here **CLIP** scores") and md.text.endswith(
        f"**CLIP** helps. {ELLIPSIS}")
    lo, hi = excerpt_window(more, (Keyword("release"),))
    assert more[lo:hi].endswith("We release code.") and hi == len(more)
    assert excerpt_html(more, (Keyword("release"),)).text.endswith("code.")


def test_the_trim_without_matches_is_the_opening_and_short_text_is_whole() -> None:
    part = excerpt_html(ABSTRACT, (Keyword("diffusion"),))
    assert part.cut and part.text.startswith("Vision models need data.")
    assert part.text.endswith(f"appendix. {ELLIPSIS}") and not part.text.startswith(ELLIPSIS)
    short = excerpt_html("CLIP is good. It helps.", KEYWORDS)
    assert not short.cut and short.text == "<mark>CLIP</mark> is good. It helps."
    assert not excerpt_html("", KEYWORDS).cut


def test_a_run_on_sentence_is_cut_near_its_match_at_word_boundaries() -> None:
    text = "word " * 400 + "then CLIP appears " + "tail " * 400
    part = excerpt_html(text, KEYWORDS)
    body = part.text.removeprefix(f"{ELLIPSIS} ").removesuffix(f" {ELLIPSIS}")
    assert part.cut and "<mark>CLIP</mark>" in body and len(body) < 760
    assert body.startswith("word ") and body.endswith("tail")


def test_the_trim_stays_escaped() -> None:
    text = "<script>alert(1)</script> one. Two <b>CLIP</b>. Three. Four & five. Six."
    part = excerpt_html(text, KEYWORDS)
    assert "<script" not in part.text and "<b>" not in part.text
    assert "&lt;b&gt;<mark>CLIP</mark>&lt;/b&gt;" in part.text
    assert "<" not in str(excerpt_md(text, KEYWORDS).text).replace("&lt;", "")


# --- authors --------------------------------------------------------------------------

@pytest.mark.parametrize(("names", "count", "want"), [
    (("Ada Lovelace",), 1, "Ada Lovelace"),
    (("A One", "B Two", "C Three"), 3, "A One, B Two, C Three"),
    (tuple(f"N{i}" for i in range(7)), 7, "N0, N1, N2 +4 more"),
    ((), 7, "7 authors"),
    ((), 1, "1 author"),
    ((), None, ""),
    (("A One", "B Two"), 12, "A One, B Two +10 more"),  # a count beyond the names given
])
def test_authors_by_name(names: tuple[str, ...], count: int | None, want: str) -> None:
    assert authors(Paper("k", "T", "A", authors=count, author_names=names)) == want


def test_authors_appear_in_every_rendering_and_stay_escaped() -> None:
    hostile = ("<script>alert(1)</script>", "Eve *Bold* [x](javascript:alert(1))", "C",
               "D")
    base = digest_of(2)
    first = Paper("k1", "One", "Abstract one.", authors=4, author_names=hostile,
                  url="https://arxiv.org/abs/1")
    counted = Paper("k2", "Two", "Abstract two.", authors=9, url="https://arxiv.org/abs/2")
    items = (Ranked(first, 2.0, base.items[0].matches, 1),
             Ranked(counted, 1.0, base.items[0].matches, 2))
    digest = Digest(base.title, base.profile, 1, base.generated_at, None, base.covers_to, 2,
                    items, (), 0)
    for html in (RENDERER.html_page(digest, None, LINKS),
                 RENDERER.html_page(digest, UNSUB, LINKS, mail=True),
                 RENDERER.page("site_issue.html.j2", {
                     "root": "../", "title": "t", "site_title": "s", "feed_url": None,
                     "feed_title": None, "feeds": [], "digest": digest,
                     "keywords": KEYWORDS, "links": None, "archive": "index.html",
                     "prev": None, "next": None}),
                 RENDERER.feed_entry(items[0], KEYWORDS) + RENDERER.feed_entry(items[1],
                                                                               KEYWORDS)):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;, Eve *Bold* [x](javascript:alert(1)), C"\
            " +1 more" in html
        assert "9 authors" in html and "<script>" not in html
    text = RENDERER.markdown(digest)
    assert r"&lt;script>alert(1)&lt;/script>, Eve \*Bold\* \[x\](javascript:alert(1)), C +1 "\
        "more" in text
    assert "; 9 authors." in text


def test_keywords_show_once_per_paper_and_titles_are_highlighted() -> None:
    html = RENDERER.html_page(digest_of(1), None, LINKS)
    meta = re.search(r'<p class="meta">Score .*?</p>', html)
    assert meta is not None
    assert meta.group().count("CLIP") == 1 and meta.group().count("data curation") == 1
    assert ('<span class="kw">CLIP</span> (title 1, abstract 2) <span class="kw">data '
            'curation</span> (title 1, abstract 1)') in meta.group()
    assert ">Paper 1: <mark>CLIP</mark> <mark>data curation</mark> at scale</a></h3>" in html
    text = RENDERER.markdown(digest_of(1))
    assert "[Paper 1: **CLIP** **data curation** at scale](<https://arxiv.org/abs/" in text
