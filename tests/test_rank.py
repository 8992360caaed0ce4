"""Keyword ranking: matching rules, weighting, explanations, determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from timing import assert_linear

from digest.models import Keyword, Paper, Profile
from digest.rank import Corpus, highlight_spans, rank, score_all, stem


def paper(title: str, abstract: str = "", upvotes: int | None = None) -> Paper:
    return Paper(key=f"title:{title.lower()}", title=title, abstract=abstract, upvotes=upvotes)


FILLER = [paper(f"Unrelated study {i}", "We measure rainfall in gardens over many years.")
          for i in range(8)]


def scores(papers: list[Paper], *terms: str | Keyword) -> dict[str, float]:
    """Score of every paper the keywords match (papers the classifier adds are left out)."""
    kws = [t if isinstance(t, Keyword) else Keyword(t) for t in terms]
    return {r.paper.title: r.score for r in score_all(Corpus.build(papers + FILLER), kws)
            if r.matches}


def test_word_boundaries_and_case() -> None:
    papers = [paper("TinyCLIP distillation"), paper("An eclipse of models"),
              paper("clip models"), paper("CLIPs everywhere"), paper("CLIP's features")]
    assert set(scores(papers, "clip")) == {"clip models", "CLIPs everywhere", "CLIP's features"}


def test_a_keyword_in_capitals_matches_only_the_acronym() -> None:
    papers = [paper("Editing video clips with CLIP guidance"), paper("Short video clips"),
              paper("A clip of the talk"), paper("CLIPs everywhere"), paper("GNNs at scale"),
              paper("Vision transformers", "A ViT backbone."), paper("Lightweight vit")]
    assert set(scores(papers, "CLIP")) == {"Editing video clips with CLIP guidance",
                                           "CLIPs everywhere"}
    assert set(scores(papers, "GNN")) == {"GNNs at scale"}
    assert set(scores(papers, "ViT")) == {"Vision transformers"}
    assert set(scores(papers, "vit")) == {"Vision transformers", "Lightweight vit"}
    # nor can the classifier bring "clips" back: acronyms are their own features
    ranked = score_all(Corpus.build(papers + FILLER), [Keyword("CLIP")])
    assert "Short video clips" not in {r.paper.title for r in ranked}


def test_plurals_and_inflections() -> None:
    assert stem("models") == stem("model")
    assert stem("curated") == stem("curating") == stem("curate")
    assert stem("studies") == stem("study")
    got = scores([paper("We curated the data"), paper("Curating data"),
                  paper("Cure of images")], "curate")
    assert set(got) == {"We curated the data", "Curating data"}


def test_phrases_match_as_phrases_and_beat_scattered_words() -> None:
    papers = [paper("A study", "We do data curation at scale."),
              paper("B study", "The curation of data at scale.")]
    ranked = score_all(Corpus.build(papers + FILLER), [Keyword("data curation")])
    assert [r.paper.title for r in ranked] == ["A study", "B study"]
    whole, scattered = ranked
    assert next((m.term, m.via) for m in whole.matches) == ("data curation", None)
    assert all(m.via == "data curation" for m in scattered.matches)
    assert whole.score > scattered.score


def test_hyphenated_compounds_match_either_way() -> None:
    got = scores([paper("Pre-training at scale"), paper("Pretraining at scale"),
                  paper("Training at scale")], "pretraining")
    assert set(got) == {"Pre-training at scale", "Pretraining at scale"}
    got = scores([paper("Pre-training at scale"), paper("Pretraining at scale")], "pre-training")
    assert set(got) == {"Pre-training at scale", "Pretraining at scale"}


def test_title_counts_more_than_abstract() -> None:
    got = scores([paper("Medical imaging", "We study images."),
                  paper("Imaging study", "We study medical images.")], "medical")
    assert got["Medical imaging"] > got["Imaging study"]


def test_rare_keyword_counts_more_than_common_one() -> None:
    common = [paper(f"Transformer {i}", "A transformer model for vision.") for i in range(10)]
    target_rare = paper("Study X", "A transformer model for pathology.")
    target_common = paper("Study Y", "A transformer model with transformer layers.")
    got = scores([*common, target_rare, target_common], "transformer", "pathology")
    assert got["Study X"] > got["Study Y"]


def test_ten_repeats_do_not_beat_two_keywords() -> None:
    repeats = paper("Paper R", " ".join(["CLIP"] * 10) + " and nothing else.")
    two = paper("Paper T", "CLIP meets data curation and nothing else.")
    also = paper("Paper C", "curation of the collections.")
    got = scores([repeats, two, also], "CLIP", "curation")
    assert got["Paper T"] > got["Paper R"]
    got = scores([repeats, two, paper("Paper D", "CLIP again")], "CLIP", "curation")
    assert got["Paper T"] > got["Paper R"]


def test_weights_and_exclude() -> None:
    papers = [paper("Medical segmentation"), paper("Video segmentation"),
              paper("A survey of medical imaging")]
    ranked = score_all(Corpus.build(papers + FILLER),
                       [Keyword("medical", 3.0), Keyword("video")], [Keyword("survey")])
    assert [r.paper.title for r in ranked] == ["Medical segmentation", "Video segmentation"]


def test_explanations_count_where_and_how_often() -> None:
    p = paper("CLIP for data curation", "We use CLIP and CLIP features; data curation helps.")
    (r,) = score_all(Corpus.build([p, *FILLER]), [Keyword("CLIP"), Keyword("data curation"),
                                                  Keyword("absent")])
    got = {m.term: (m.title_hits, m.abstract_hits) for m in r.matches if m.via is None}
    assert got == {"CLIP": (1, 2), "data curation": (1, 1)}
    contributions = [m.contribution for m in r.matches]
    assert contributions == sorted(contributions, reverse=True) and min(contributions) > 0


def test_ties_break_deterministically() -> None:
    papers = [paper("Beta CLIP"), paper("alpha CLIP"), paper("Gamma CLIP", upvotes=3)]
    for order in (papers, papers[::-1]):
        ranked = score_all(Corpus.build(order + FILLER), [Keyword("CLIP")])
        assert [r.paper.title for r in ranked] == ["Gamma CLIP", "alpha CLIP", "Beta CLIP"]
        assert [r.rank for r in ranked] == [1, 2, 3]


def test_profile_limits_and_the_rest() -> None:
    papers = [paper(f"CLIP {i}", "CLIP " * i) for i in range(1, 6)] + FILLER
    corpus = Corpus.build(papers)
    picks, rest = rank(corpus, Profile("p", keywords=(Keyword("CLIP"),), max_items=2))
    assert len(picks) == 2 and len(rest) == len(papers) - 2
    picks, _ = rank(corpus, Profile("p", keywords=(Keyword("CLIP"),), min_score=1e9))
    assert picks == []
    picks, rest = rank(corpus, Profile("p", max_items=100))  # no keywords: everything
    assert len(picks) == len(papers) and rest == []


def test_highlight_spans() -> None:
    text = "Pre-training CLIPs for data curation; pretraining."
    spans = highlight_spans(text, (Keyword("pretraining"), Keyword("CLIP"),
                                   Keyword("data curation")))
    assert [text[s:e] for s, e in spans] == ["Pre-training", "CLIPs", "data curation",
                                             "pretraining"]
    clips = "Short video clips, not CLIP."
    assert [clips[s:e] for s, e in highlight_spans(clips, (Keyword("CLIP"),))] == ["CLIP"]


def test_a_partial_index_ranks_exactly_like_a_full_one() -> None:
    from digest.rank import stems_of

    papers = [paper("Data curation for CLIP", "We curate data; pre-training helps."),
              paper("Pretraining CLIPs", "Vision-language pretraining at scale."),
              paper("Gardens", "Rainfall data over years."), *FILLER]
    wanted = Profile("p", keywords=(Keyword("data curation"), Keyword("CLIP")))
    other = (Keyword("pretraining"), Keyword("rainfall"))
    full = Corpus.build(papers)
    partial = Corpus.build(papers, stems_of([wanted]))
    assert set(partial.postings) < set(full.postings)
    for kws in (wanted.keywords, other):  # ``other`` is indexed lazily on first use
        assert score_all(partial, kws) == score_all(full, kws)


def test_explanation_text_names_whole_keywords_and_lone_words() -> None:
    from digest.render import explain

    papers = [paper("Data curation at scale", "We curate data."),
              paper("Curation of data", "Data again.")]
    ranked = score_all(Corpus.build(papers + FILLER), [Keyword("data curation")])
    assert [explain(r) for r in ranked] == [
        "data curation (title 1)",
        '"data" of data curation (title 1, abstract 1), "curation" of data curation (title 1)']


def _batch() -> list[Paper]:
    """A small batch of two topics, enough for the classifier to learn from."""
    topics = {
        "pruning": ["Structured pruning of vision transformers", "Token pruning for fast ViTs",
                    "Pruning attention heads", "Magnitude pruning revisited"],
        "curation": ["Data curation for CLIP", "Filtering web image-text pairs",
                     "Deduplicating pretraining data", "Curating captions at scale"],
        "other": ["Rainfall in gardens", "Bird song datasets", "Soil moisture sensing",
                  "Tidal patterns of bays", "Data about weather stations"],
    }
    text = {"pruning": "We remove weights and tokens to make transformers faster and smaller.",
            "curation": "We filter and deduplicate image-text pairs so models train on "
                        "cleaner data.",
            "other": "We collect data in the field and measure it over many years."}
    return [paper(t, text[k]) for k, ts in topics.items() for t in ts]


def test_an_interest_sentence_changes_the_ranking() -> None:
    corpus = Corpus.build(_batch())
    bare = Profile("p", keywords=(Keyword("transformers"),))
    keen = Profile("p", keywords=(Keyword("transformers"),),
                   interest="mostly how web image-text pairs are filtered and deduplicated")
    before = [r.paper.title for r in rank(corpus, bare)[0]]
    after = [r.paper.title for r in rank(corpus, keen)[0]]
    assert before != after
    assert after.index("Filtering web image-text pairs") < len(after) // 2 + 1
    assert "Filtering web image-text pairs" not in before[:3]
    # alone, the interest sentence is the whole query
    alone = rank(corpus, Profile("p", interest="pruning tokens of vision transformers"))[0]
    assert alone[0].paper.title in {"Token pruning for fast ViTs",
                                    "Structured pruning of vision transformers"}
    assert any(m.via == "interest" for m in alone[0].matches)


def test_a_phrase_word_alone_never_outranks_a_whole_keyword() -> None:
    papers = [*_batch(), paper("Data data data", "Data and more data, data everywhere: data.")]
    corpus = Corpus.build(papers)
    ranked = score_all(corpus, [Keyword("data curation", 3.0), Keyword("pruning")])
    titles = [r.paper.title for r in ranked]
    whole = [t for t, r in zip(titles, ranked, strict=True)
             if any(m.via is None for m in r.matches)]
    assert "Magnitude pruning revisited" in whole
    lone = titles.index("Data data data")
    assert all(titles.index(t) < lone for t in whole)


def test_highlighting_never_touches_a_url() -> None:
    text = "CLIP code at https://github.com/x/clip-pruning and www.clip.org/pruning; pruning."
    spans = highlight_spans(text, (Keyword("pruning"), Keyword("clip")))
    got = [text[s:e] for s, e in spans]
    assert got == ["CLIP", "pruning"]
    assert all(not (text.index("https") <= s < text.index(" and")) for s, _ in spans)


def test_votes_train_the_readers_ranker() -> None:
    from digest.models import Vote

    batch = _batch()
    corpus = Corpus.build(batch)
    profile = Profile("p", keywords=(Keyword("data"),), max_items=6)
    before = [r.paper.title for r in rank(corpus, profile)[0]]
    liked = [Vote(paper("Curation of alt-text pairs", "Filtering and deduplicating image-text "
                        "pairs for cleaner training data."), True),
             Vote(paper("Field rainfall data", "We collect data in the field."), False)]
    ranked = rank(corpus, profile, liked)[0]
    after = [r.paper.title for r in ranked]
    assert before != after
    curation = {"Data curation for CLIP", "Filtering web image-text pairs",
                "Deduplicating pretraining data", "Curating captions at scale"}
    assert sum(t in curation for t in after[:4]) > sum(t in curation for t in before[:4])
    moved = [r for r in ranked if r.paper.title in curation]
    assert any(r.similar == ("Curation of alt-text pairs",) for r in moved)
    assert all("Field rainfall data" not in r.similar for r in ranked)
    # same input, same order
    assert [r.paper.title for r in rank(Corpus.build(batch[::-1]), profile, liked)[0]] == after


def test_a_phrase_s_lone_words_keep_hyphenated_parts_whole() -> None:
    from digest.rank import word_queries

    assert word_queries([Keyword("pre-training")]) == []  # no lone "pre"
    got = {q.term for q in word_queries([Keyword("image-text retrieval")])}
    assert got == {"image-text", "retrieval"}
    ranked = score_all(Corpus.build([paper("Pre-processing of soil"), *FILLER]),
                       [Keyword("pre-training")])
    assert "Pre-processing of soil" not in {r.paper.title for r in ranked if r.matches}


# -- edge cases found in review ---------------------------------------------------------------

def test_word_caches_are_trimmed_between_texts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from digest import rank as rank_module

    monkeypatch.setattr(rank_module, "_WORD_CACHE_MAX", 5)
    for word in ("one", "two", "three", "four"):
        rank_module._word_stem(word)
    corpus = Corpus.build([paper("The model", "The model beats ZXQ-Net on ZXQ and YBench")])
    assert corpus.titles[0][0] == ("the", "model")
    ranked = score_all(Corpus.build([paper("ZXQ wins", "ZXQ again"), *FILLER]),
                       [Keyword("ZXQ")])
    assert [r.paper.title for r in ranked if r.matches] == ["ZXQ wins"]


def test_empty_batches_and_empty_texts_rank_without_error() -> None:
    from digest.models import Vote

    liked = [Vote(paper("Graph nets", "Graph neural networks."), True)]
    assert rank(Corpus.build([]), Profile("p", keywords=(Keyword("graph"),)), liked) == ([], [])
    blank = [paper(f"{i}", "") for i in range(5)]
    picks, rest = rank(Corpus.build(blank), Profile("p", keywords=(Keyword("graph"),)), liked)
    assert picks == [] and len(rest) == 5


def test_products_count_every_value_of_every_row() -> None:
    import numpy as np

    from digest.learn import Features

    docs = [(["graph", "net"], ["neural"]), (["rain"], ["garden"]), (["graph"], ["neural"]),
            ([], [])]
    feat = Features.build(docs, frozenset())
    w = np.ones(feat.n_features, dtype=np.float32)
    expected = [float(feat.row(i)[1].sum()) for i in range(4)]
    assert np.allclose(feat.matvec(w), expected) and expected[2] > 0 and expected[3] == 0


def test_ranking_is_the_same_in_every_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "r.py"
    script.write_text(
        "from digest import learn\nfrom digest.models import Keyword, Paper, Profile\n"
        "from digest.rank import Corpus, rank\nlearn.MAX_FEATURES = 40\n"
        "ps = [Paper(f'k{i}', f'Paper {i} on graph nets {i % 7}', ' '.join(f'w{(i * j) % 97}'"
        " for j in range(60))) for i in range(120)]\n"
        "c = Corpus.build(ps)\npicks, _ = rank(c, Profile('p', keywords=(Keyword('graph'),),"
        " max_items=30))\nprint([(r.paper.key, r.score) for r in picks])\n"
        "print(c.features.indices.tobytes().hex(), c.features.data.tobytes().hex())\n")
    runs = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
            for seed in ("1", "2", "3")}
    assert len(runs) == 1


def test_highlighting_many_links_is_linear() -> None:
    assert_linear(lambda n: lambda: highlight_spans("graph www.x.org " * (n // 16),
                                                    (Keyword("graph"),)), 4000)


def test_digits_with_one_capital_are_words_not_acronyms() -> None:
    papers = [paper("3D reconstruction"), paper("Fast 3d meshes"), paper("ViT at scale")]
    assert set(scores(papers, "3D")) == {"3D reconstruction", "Fast 3d meshes"}
    assert set(scores(papers, "vit")) == {"ViT at scale"}


def test_excludes_apply_without_keywords_and_votes_alone_learn_nothing_false() -> None:
    from digest.models import Vote

    corpus = Corpus.build([paper("Graph neural networks"), paper("Rain in gardens")])
    picks, _ = rank(corpus, Profile("p", exclude=(Keyword("graph"),)))
    assert [r.paper.title for r in picks] == ["Rain in gardens"]
    disliked = [Vote(paper("Bird songs", "Birds sing."), False)]
    picks, _ = rank(Corpus.build(FILLER), Profile("p"), disliked)
    assert picks and not any(r.learned for r in picks)
