"""The semantic signal in runs and in ``digest rank``: each paper embedded once, vectors
stored with their papers, and everything still working (with one notice) without the extra."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Clock, Project, tree_state
from test_feedback import READER, sample_items, write_dump

from digest import embed
from digest.cli import main
from digest.pipeline import SEMANTIC_OFF, Semantic, preview, run, semantic_for

pytestmark = pytest.mark.skipif(not embed.available(),
                                reason="the semantic extra is not installed")
N_PAPERS = len(sample_items())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vector cache of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DIGEST_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many texts each call of the real model embedded (the model still runs)."""
    calls: list[int] = []
    real = embed.Embedder.embed

    def counted(self: embed.Embedder, texts: list[str], progress: object = None) -> object:
        calls.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(embed.Embedder, "embed", counted)
    return calls


@pytest.fixture
def semantic(project: Project, cache: Path) -> Iterator[Semantic]:
    project.write_config(READER, extra="also_new = 1000")
    found = semantic_for(project.config().ranking, pytest.fail)
    assert found is not None
    yield found
    found.close()


def vector_rows(project: Project) -> int:
    conn = sqlite3.connect(project.config().store_path)
    try:
        return int(conn.execute("SELECT count(*) FROM vectors").fetchone()[0])
    finally:
        conn.close()


def test_a_run_embeds_each_new_paper_once(project: Project, semantic: Semantic, clock: Clock,
                                          model_calls: list[int], tmp_path: Path) -> None:
    write_dump(project.inbox / "a.json")
    report = run(project.config(), now=clock, semantic=semantic)
    assert report.new_papers == N_PAPERS
    assert semantic.asked == N_PAPERS and vector_rows(project) == N_PAPERS
    assert semantic.computed == sum(model_calls) > N_PAPERS  # the papers and the queries
    assert not [w for w in report.warnings if "embedding" in w]
    clock.tick()
    # The same papers again (another listing) and two new ones: only those two are embedded.
    data = json.loads((project.inbox / "a.json").read_text())
    for n, row in enumerate(data[:2]):
        row["paper"]["id"] = f"2614.{n:05d}"
        row["paper"]["title"] = f"A Fresh Paper Number {n}"
    for row in data:
        row["paper"]["upvotes"] = 99
    (project.inbox / "b.json").write_text(json.dumps(data))
    before = sum(model_calls)
    report = run(project.config(), now=clock, semantic=semantic)
    assert report.new_papers == 2
    assert semantic.asked == N_PAPERS + 2 and vector_rows(project) == N_PAPERS + 2
    assert sum(model_calls) - before == 2
    clock.tick()
    before = sum(model_calls)
    report = run(project.config(), now=clock, semantic=semantic)  # nothing new
    assert sum(model_calls) == before and semantic.asked == N_PAPERS + 2


def test_stored_vectors_cost_no_model_call_even_with_an_empty_cache(
        project: Project, semantic: Semantic, clock: Clock, model_calls: list[int],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dump(project.inbox / "a.json")
    run(project.config(), now=clock, semantic=semantic)
    clock.tick()
    data = json.loads((project.inbox / "a.json").read_text())
    for row in data:
        row["paper"]["upvotes"] = 50  # another listing of the same papers
    (project.inbox / "b.json").write_text(json.dumps(data))
    monkeypatch.setenv("DIGEST_CACHE_DIR", str(tmp_path / "empty-cache"))
    fresh = semantic_for(project.config().ranking, pytest.fail)
    assert fresh is not None
    try:
        calls = len(model_calls)
        report = run(project.config(), now=clock, semantic=fresh)
    finally:
        fresh.close()
    assert report.dumps_ingested and report.new_papers == 0
    assert fresh.asked == 0 and model_calls[calls:] == []  # nothing new to rank: no queries


def test_papers_without_vectors_are_ranked_without_them_with_one_warning(
        project: Project, cache: Path, clock: Clock) -> None:
    project.write_config(READER + '\n[[subscribers]]\nname = "cy"\nkeywords = ["robot"]\n',
                         extra="[ranking]\nsemantic = false")
    write_dump(project.inbox / "a.json")
    run(project.config(), now=clock, due={"bob": None})  # eve's and cy's digests wait
    assert vector_rows(project) == 0
    clock.tick()
    project.write_config(READER + '\n[[subscribers]]\nname = "cy"\nkeywords = ["robot"]\n')
    report = run(project.config(), now=clock)
    assert {d["subscriber"] for d in report.digests} == {"eve", "cy"}
    said = [w for w in report.warnings if "no stored embedding" in w]
    assert len(said) == 1 and "ranked without the semantic signal" in said[0]


def test_preview_writes_no_vectors(project: Project, semantic: Semantic, clock: Clock,
                                   tmp_path: Path) -> None:
    write_dump(project.inbox / "a.json")
    run(project.config(), now=clock, semantic=semantic)
    clock.tick()
    data = json.loads((project.inbox / "a.json").read_text())
    for n, row in enumerate(data[:3]):
        row["paper"]["id"] = f"2615.{n:05d}"
        row["paper"]["title"] = f"Previewed Paper {n}"
    dump = tmp_path / "later.json"
    dump.write_text(json.dumps(data[:3]))
    before = tree_state(project.root)
    _, rendered = preview(project.config(), dumps=[dump], now=clock)
    assert {r.digest.profile.name: r.digest.new_count for r in rendered} == {"eve": 3,
                                                                              "bob": 3}
    assert tree_state(project.root) == before and vector_rows(project) == N_PAPERS


def rank_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    code = main(["rank", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_rank_twice_embeds_nothing_the_second_time(tmp_path: Path, cache: Path,
                                                  model_calls: list[int],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dump = write_dump(tmp_path / "p.json")
    args = (str(dump), "-k", "robot", "--interest", "machines that walk and grasp")
    first = rank_json(capsys, *args)
    assert sum(model_calls) >= N_PAPERS and (cache / "vectors.sqlite").is_file()
    calls = len(model_calls)
    assert rank_json(capsys, *args) == first
    assert model_calls[calls:] == []
    assert rank_json(capsys, *args, "--no-semantic") != first  # the vectors did count
    assert model_calls[calls:] == []


def test_rank_with_a_store_reads_votes_and_writes_nothing(project: Project, cache: Path,
                                                         clock: Clock, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    project.write_config(READER)
    write_dump(project.inbox / "a.json")
    run(project.config(), now=clock)
    aid, *_ = sample_items()[0]
    assert main(["feedback", "--config", str(project.config_path), "eve", "--like",
                 f"arxiv:{aid}"]) == 0
    capsys.readouterr()
    before = tree_state(project.root)
    rows = rank_json(capsys, str(project.inbox / "a.json"), "--config",
                     str(project.config_path), "--subscriber", "eve")
    assert len(rows) == N_PAPERS - 1 and f"arxiv:{aid}" not in {r["key"] for r in rows}
    assert tree_state(project.root) == before


BLOCKED = ("import sys; sys.modules['onnxruntime'] = None\n"
           "from digest.cli import main\n"
           "codes = [main(args.split('|')) for args in sys.argv[1:]]\n"
           "sys.exit(max(codes))\n")


def blocked(*commands: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run digest commands in one process that cannot import onnxruntime."""
    return subprocess.run([sys.executable, "-c", BLOCKED, *("|".join(c) for c in commands)],
                          capture_output=True, text=True, check=False, cwd=cwd)


def test_without_the_extra_everything_works_and_says_so_once(project: Project,
                                                             tmp_path: Path) -> None:
    project.write_config(READER)
    cfg = str(project.config_path)
    write_dump(project.inbox / "a.json")
    later = tmp_path / "later.json"
    later.write_text(json.dumps([{"paper": {"id": "2616.00001", "title": "A Later Paper",
                                            "summary": "About robot learning."}}]))
    proc = blocked(["run", "--config", cfg],
                   ["rank", str(project.inbox / "a.json"), "-k", "robot", "--json"],
                   ["ingest", str(later), "--config", cfg], ["run", "--config", cfg],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(SEMANTIC_OFF) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
    assert f"digest for eve: issue 1, {N_PAPERS} new papers" in proc.stdout
    assert (project.root / "data" / "digests" / "eve").is_dir()
    assert vector_rows(project) == 0
    # A second process says it again (once); semantic = false never says it.
    proc = blocked(["rank", str(later), "-k", "robot"], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr.count(SEMANTIC_OFF) == 1
    project.write_config(READER, extra="[ranking]\nsemantic = false")
    proc = blocked(["run", "--config", cfg], ["rank", str(later), "--config", cfg,
                                              "--subscriber", "eve"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert SEMANTIC_OFF not in proc.stderr and "A Later Paper" in proc.stdout


def test_a_paper_whose_abstract_grows_is_embedded_again(project: Project, semantic: Semantic,
                                                        clock: Clock) -> None:
    from digest.embed import from_blob, paper_text
    from digest.store import Store

    data = json.loads(write_dump(project.inbox / "a.json").read_text())
    first = data[0]["paper"]
    short = [{"paper": {**first, "summary": first["summary"][:40]}}]
    (project.inbox / "a.json").write_text(json.dumps(short), encoding="utf-8")
    run(project.config(), now=clock, semantic=semantic)
    clock.tick()
    (project.inbox / "b.json").write_text(json.dumps([data[0]]), encoding="utf-8")
    run(project.config(), now=clock, semantic=semantic)
    store = Store.open(project.config().store_path)
    try:
        key = f"arxiv:{first['id']}"
        (paper,) = [p for p in store.papers_after(0, store.latest_run()) if p.key == key]
        assert paper.abstract == first["summary"]  # the longer text won
        stored = from_blob(store.vectors(semantic.model, [key])[key], semantic.embedder.dim)
    finally:
        store.close()
    expected = semantic.embedder.embed([paper_text(paper)])[0]
    assert float(stored @ expected) > 0.999
