"""Readers' votes: recorded, listed, replaced, reset, kept across processes; they steer the
next ranking and a judged paper is never offered as new again."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Clock, Project

from digest import feedback
from digest.cli import main
from digest.errors import UsageError
from digest.pipeline import run
from digest.store import Store

# Three kinds of paper; every abstract says "learning", the reader's one generic keyword.
TOPICS = {
    "robot": [
        ("Tactile Grasping for Robot Arms", "A robot arm is taught to grasp unseen objects from "
         "tactile sensors and joint torque feedback during manipulation."),
        ("Legged Locomotion over Rough Terrain", "Quadruped robot locomotion policies trained "
         "in simulation transfer to rough terrain with joint torque control."),
        ("Sim-to-Real Transfer for Manipulation Policies", "Domain randomisation in "
         "simulation lets manipulation policies for a robot gripper transfer to hardware."),
        ("Dexterous In-Hand Rotation with Tactile Sensors", "A five-fingered robot hand "
         "rotates objects using tactile sensors, trained with reinforcement in simulation."),
        ("Mobile Robot Navigation in Crowds", "A mobile robot plans paths among pedestrians; "
         "the navigation policy is trained in simulation with lidar input."),
        ("Language-Conditioned Robot Manipulation", "Instructions steer a robot gripper; "
         "manipulation skills trained in simulation follow spoken commands."),
        ("Whole-Body Control for Humanoid Robots", "Humanoid robot balance and locomotion "
         "with whole-body torque control, trained in simulation and run on hardware."),
        ("Robot Assembly from Human Demonstration", "A robot arm assembles parts after "
         "human demonstrations; tactile feedback corrects its grasp and insertion."),
    ],
    "medical": [
        ("Chest X-ray Report Generation", "Radiology reports are generated from chest X-ray "
         "images; clinicians rate the findings for patients in a hospital study."),
        ("Tumour Segmentation in MRI Scans", "Brain tumour segmentation on MRI scans of "
         "patients, validated by radiologists across three hospitals."),
        ("Pathology Slide Classification", "Whole-slide pathology images of biopsies are "
         "classified for cancer grading, compared with pathologists' diagnoses."),
        ("Retinal Imaging for Diabetic Screening", "Fundus photographs of patients screen "
         "for diabetic retinopathy in clinics, checked by ophthalmologists."),
        ("Federated Training across Hospitals", "Hospitals train a diagnosis model without "
         "sharing patient records; clinical scans stay in each hospital."),
        ("Ultrasound Video Analysis for Cardiology", "Echocardiogram ultrasound videos of "
         "patients measure heart function; cardiologists review the scans."),
        ("Clinical Notes Summarisation", "Discharge summaries are written from clinical notes "
         "of hospital patients and checked by physicians for errors."),
        ("Dermatology Lesion Diagnosis from Photos", "Skin lesion photos of patients are "
         "diagnosed for melanoma; dermatologists compare the diagnosis."),
    ],
    "language": [
        ("Tool Use for Language Model Agents", "Language model agents call tools and APIs; "
         "the agent plans multi-step tasks with a text interface."),
        ("Long-Context Retrieval for Question Answering", "A language model answers "
         "questions over long documents with retrieval of text passages."),
        ("Instruction Tuning with Synthetic Dialogues", "Synthetic dialogues tune a language "
         "model to follow instructions; text quality is rated by annotators."),
        ("Reasoning Chains in Small Language Models", "Small language models produce "
         "step-by-step reasoning text for maths word problems."),
        ("Multilingual Translation with One Decoder", "One decoder language model translates "
         "text between forty languages with shared tokens."),
        ("Detecting Hallucinations in Generated Text", "Language model outputs are checked "
         "against sources; hallucinated text spans are flagged."),
        ("Code Generation Benchmarks for Agents", "Language model agents write code for "
         "programming tasks; the benchmark runs unit tests on the text."),
        ("Tokenizer Choices for Language Models", "How tokenizer vocabulary size changes "
         "language model perplexity on text in many languages."),
    ],
}


ENDINGS = ("Learning takes {} hours on one GPU.", "Learning runs for {} epochs.",
           "We report learning curves over {} seeds.")  # none shared by every abstract


def sample_items() -> list[tuple[str, str, str, str]]:
    """(arXiv id, topic, title, abstract) of every sample paper."""
    out = []
    for t, (topic, papers) in enumerate(TOPICS.items()):
        for n, (title, abstract) in enumerate(papers):
            out.append((f"2612.{t}{n:04d}", topic, title,
                        f"{abstract} {ENDINGS[n % 3].format(3 * t + n + 2)}"))
    return out


def write_dump(path: Path, topics: tuple[str, ...] = tuple(TOPICS)) -> Path:
    """A daily-papers JSON dump of the sample papers of these topics."""
    rows = [{"paper": {"id": aid, "title": title, "summary": abstract,
                       "authors": [{"name": "A. Author"}],
                       "upvotes": 10,
                       "publishedAt": "2026-12-01T10:00:00.000Z"}}
            for aid, topic, title, abstract in sample_items() if topic in topics]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def key_of(title: str) -> str:
    return next(f"arxiv:{aid}" for aid, _, t, _ in sample_items() if t == title)


def topic_of(title: str) -> str:
    return next(topic for _, topic, t, _ in sample_items() if t == title)


READER = """
[[subscribers]]
name = "eve"
keywords = ["learning"]
max_items = 30

[[subscribers]]
name = "bob"
"""


@pytest.fixture
def site(project: Project, clock: Clock) -> Project:
    """A deployment whose store holds the sample papers (one run)."""
    project.write_config(READER, extra="also_new = 1000\n[ranking]\nsemantic = false")
    write_dump(project.inbox / "papers.json")
    run(project.config(), now=clock)
    clock.tick()
    return project


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def votes_table(project: Project) -> list[tuple[str, int, int]]:
    conn = sqlite3.connect(project.config().store_path)
    try:
        return conn.execute("SELECT subscriber, paper_id, vote FROM feedback"
                            " ORDER BY paper_id").fetchall()
    finally:
        conn.close()


GRASP, XRAY, AGENTS = ("Tactile Grasping for Robot Arms", "Chest X-ray Report Generation",
                       "Tool Use for Language Model Agents")


def test_record_list_text_and_json(site: Project, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(site.config_path)
    code, out, err = cli(capsys, "feedback", "--config", cfg, "eve", "--like", key_of(GRASP),
                         "--dislike", key_of(XRAY))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("+ like") and key_of(GRASP) in lines[0] and GRASP in lines[0]
    assert lines[1].startswith("- dislike") and XRAY in lines[1]
    code, out, _ = cli(capsys, "feedback", "--config", cfg, "eve", "--list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {(r["key"], r["title"], r["vote"]) for r in rows} == {
        (key_of(GRASP), GRASP, "like"), (key_of(XRAY), XRAY, "dislike")}
    assert all(set(r) == {"key", "title", "vote", "when"} for r in rows)
    assert all(r["when"].endswith("+00:00") and r["when"][:2] == "20" for r in rows)
    code, out, _ = cli(capsys, "feedback", "--config", cfg, "eve", "--list")
    assert code == 0 and len(out.splitlines()) == 2 and GRASP in out and XRAY in out
    code, out, _ = cli(capsys, "feedback", "--config", cfg, "bob", "--list")
    assert code == 0 and "bob: no votes recorded" in out


def test_a_new_vote_replaces_the_old_and_a_repeat_is_one_vote(site: Project,
                                                            clock: Clock) -> None:
    config = site.config()
    first = feedback.record(config, "eve", likes=[key_of(GRASP)], now=clock())
    clock.tick()
    again = feedback.record(config, "eve", likes=[key_of(GRASP)], now=clock())
    assert again[0].at == first[0].at  # the same vote twice is one vote, from the first time
    assert len(votes_table(site)) == 1
    clock.tick()
    (changed,) = feedback.record(config, "eve", dislikes=[key_of(GRASP)], now=clock())
    assert not changed.like and changed.at == clock()
    assert [v for _, _, v in votes_table(site)] == [-1]
    (listed,) = feedback.votes(config, "eve")
    assert listed.paper.title == GRASP and not listed.like


def test_votes_are_listed_newest_first(site: Project, clock: Clock) -> None:
    config = site.config()
    for title in (GRASP, XRAY, AGENTS):
        feedback.record(config, "eve", likes=[key_of(title)], now=clock())
        clock.tick()
    assert [v.paper.title for v in feedback.votes(config, "eve")] == [AGENTS, XRAY, GRASP]


def test_reset_forgets_only_that_reader(site: Project,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(site.config_path)
    assert cli(capsys, "feedback", "--config", cfg, "eve", "--like", key_of(GRASP),
               "--like", key_of(AGENTS))[0] == 0
    assert cli(capsys, "feedback", "--config", cfg, "bob", "--like", key_of(XRAY))[0] == 0
    code, out, _ = cli(capsys, "feedback", "--config", cfg, "eve", "--reset")
    assert code == 0 and "eve: forgot 2 vote(s)" in out
    assert [s for s, _, _ in votes_table(site)] == ["bob"]
    code, out, _ = cli(capsys, "feedback", "--config", cfg, "eve", "--reset", "--json")
    assert code == 0 and json.loads(out) == {"subscriber": "eve", "forgotten": 0}


def test_votes_survive_a_new_process(site: Project) -> None:
    cfg = str(site.config_path)
    proc = subprocess.run([sys.executable, "-c", "import sys; from digest.cli import main;"
                           " sys.exit(main())", "feedback", "--config", cfg, "eve",
                           "--like", key_of(AGENTS)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run([sys.executable, "-c", "import sys; from digest.cli import main;"
                             " sys.exit(main())", "feedback", "--config", cfg, "eve", "--list",
                             "--json"], capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [(r["key"], r["vote"]) for r in json.loads(listed.stdout)] == [
        (key_of(AGENTS), "like")]
    store = Store.open(site.config().store_path)
    try:
        assert store.judged("eve") == {key_of(AGENTS)}
    finally:
        store.close()


def test_an_unknown_key_records_nothing(site: Project,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "feedback", "--config", str(site.config_path), "eve",
                         "--like", key_of(GRASP), "--like", "arxiv:2699.99999")
    assert code == 2 and out == ""
    assert "'arxiv:2699.99999'" in err and "digest rank --json" in err
    assert "digest parse --json" in err and "nothing was recorded" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert votes_table(site) == []


def test_an_unknown_subscriber_is_named_with_the_valid_ones(
        site: Project, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--like", key_of(GRASP)], ["--list"], ["--reset"]):
        code, _, err = cli(capsys, "feedback", "--config", str(site.config_path), "zed", *args)
        assert code == 2 and "no subscriber named 'zed'" in err and "(have: eve, bob)" in err
    assert votes_table(site) == []
    with pytest.raises(UsageError, match="have: eve, bob"):
        feedback.record(site.config(), "zed", likes=[key_of(GRASP)])


@pytest.mark.parametrize(("args", "message"), [
    (["--list", "--like", "k"], "--list cannot go with --like/--dislike"),
    (["--reset", "--dislike", "k"], "--reset cannot go with --like/--dislike"),
    (["--list", "--reset"], "give one of --list, --reset, not more"),
    ([], "give --like KEY or --dislike KEY"),
])
def test_mixed_modes_are_usage_errors(site: Project, capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    code, out, err = cli(capsys, "feedback", "--config", str(site.config_path), "eve", *args)
    assert code == 2 and out == "" and message in err
    assert votes_table(site) == []


def test_liked_and_disliked_at_once_records_nothing(site: Project,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "feedback", "--config", str(site.config_path), "eve",
                       "--like", key_of(GRASP), "--dislike", key_of(GRASP))
    assert code == 2 and "cannot be liked and disliked at once" in err
    assert votes_table(site) == []


def test_no_store_yet_is_explained_and_not_created(project: Project,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config(READER)
    cfg = str(project.config_path)
    code, _, err = cli(capsys, "feedback", "--config", cfg, "eve", "--like", "arxiv:2612.00000")
    assert code == 2 and "no papers have been ingested yet" in err and "digest run" in err
    code, out, _ = cli(capsys, "feedback", "--config", cfg, "eve", "--list", "--json")
    assert code == 0 and json.loads(out) == []
    assert not (project.root / "data").exists()


def test_a_key_the_paper_was_not_stored_under_still_finds_it(project: Project,
                                                             clock: Clock) -> None:
    """A listing without arXiv ids stores title keys; a vote by arXiv id or title finds it."""
    project.write_config(READER, extra="[ranking]\nsemantic = false")
    (project.inbox / "p.json").write_text(json.dumps([{"paper": {
        "title": "A Paper Without Its Id", "summary": "Text about learning."}}]))
    run(project.config(), now=clock)
    (vote,) = feedback.record(project.config(), "eve",
                              likes=["title:A paper without its id!"])
    assert vote.paper.key == "title:a paper without its id"


def ranked_titles(capsys: pytest.CaptureFixture[str], site: Project, dump: Path,
                  *extra: str) -> list[dict[str, object]]:
    code, out, err = cli(capsys, "rank", str(dump), "--config", str(site.config_path),
                         "--subscriber", "eve", "--no-semantic", "--json", *extra)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_votes_change_the_next_ranking(site: Project, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    dump = write_dump(tmp_path / "again.json")
    before = ranked_titles(capsys, site, dump)
    assert all(set(r) >= {"key", "similar", "learned"} for r in before)
    assert [topic_of(str(r["title"])) for r in before[:3]] != ["robot"] * 3
    liked = [t for t, _ in TOPICS["robot"][:3]]
    disliked = [t for t, _ in TOPICS["medical"][:3]]
    code, _, err = cli(capsys, "feedback", "--config", str(site.config_path), "eve",
                       *[a for t in liked for a in ("--like", key_of(t))],
                       *[a for t in disliked for a in ("--dislike", key_of(t))])
    assert code == 0, err
    after = ranked_titles(capsys, site, dump)
    titles = [str(r["title"]) for r in after]
    assert not set(titles) & {*liked, *disliked}  # judged papers are not offered again
    old = [str(r["title"]) for r in before if r["title"] in titles]
    assert titles != old

    def mean_rank(order: list[str], topic: str) -> float:
        places = [n for n, t in enumerate(order) if topic_of(t) == topic]
        return sum(places) / len(places)

    # More like the liked robots, less like the disliked medical papers.
    assert mean_rank(titles, "robot") < mean_rank(old, "robot")
    assert mean_rank(titles, "medical") > mean_rank(old, "medical")
    assert any(r["similar"] and set(r["similar"]) <= set(liked) for r in after)
    code, out, _ = cli(capsys, "rank", str(dump), "--config", str(site.config_path),
                       "--subscriber", "eve", "--no-semantic")
    assert code == 0 and "you already judged left out" in out
    assert "similar to papers you liked: " in out


def test_a_voted_paper_never_appears_as_new(site: Project, clock: Clock, tmp_path: Path) -> None:
    """Papers ingested for one reader's digest; another votes before their own goes out."""
    config = site.config()
    extra = write_dump(tmp_path / "more.json")  # the same papers: nothing new
    first_new = [aid for aid, *_ in sample_items()][:2]
    data = json.loads(extra.read_text())
    for row, aid in zip(data, first_new, strict=False):
        row["paper"]["id"] = aid.replace("2612.", "2613.")
        row["paper"]["title"] += " Revisited"
    (site.inbox / "more.json").write_text(json.dumps(data[:2]))
    report = run(config, now=clock, due={"bob": None})  # only bob's digest now
    assert [d["subscriber"] for d in report.digests] == ["bob"]
    clock.tick()
    fresh = [f"arxiv:{aid.replace('2612.', '2613.')}" for aid in first_new]
    feedback.record(config, "eve", dislikes=[fresh[0]], now=clock())
    report = run(config, now=clock)
    (eve,) = [d for d in report.digests if d["subscriber"] == "eve"]
    assert eve["new"] == 1
    text = Path(str(eve["markdown"])).read_text(encoding="utf-8")
    assert f"{TOPICS['robot'][1][0]} Revisited" in text
    assert f"{TOPICS['robot'][0][0]} Revisited" not in text


def test_recording_needs_no_run_lock_and_waits_for_a_writer(site: Project) -> None:
    import threading

    from digest.lock import exclusive

    config = site.config()
    writer = sqlite3.connect(config.store_path, isolation_level=None, check_same_thread=False)
    with exclusive(config.data_dir, "run"):  # a run is going on
        writer.execute("BEGIN IMMEDIATE")  # ... and is inside a dump's transaction
        release = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
        release.start()
        (vote,) = feedback.record(config, "eve", likes=[key_of(AGENTS)])
        release.join()
    writer.close()
    assert vote.like and [s for s, _, _ in votes_table(site)] == ["eve"]
