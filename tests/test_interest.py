"""A reader's interest sentence and the [ranking] table: parsed, bounded, on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_feedback import topic_of, write_dump

from digest.cli import main
from digest.config import MAX_INTEREST, load_config
from digest.errors import ConfigError


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_interest_is_read_with_white_space_collapsed(tmp_path: Path) -> None:
    path = config_with(tmp_path, '[[subscribers]]\nname = "a"\ninterest = """\n'
                                 'Robots that learn to  grasp,\n\tand walk."""\n'
                                 '[[subscribers]]\nname = "b"\n')
    a, b = load_config(path).subscribers
    assert a.interest == "Robots that learn to grasp, and walk."
    assert b.interest == ""


@pytest.mark.parametrize(("value", "message"), [
    ('"' + "word " * (MAX_INTEREST // 5 + 1) + '"',
     f"[subscribers][0].interest: at most {MAX_INTEREST} characters, got"),
    ('"robots\\u0007 that bell"', "[subscribers][0].interest: contains the control character "
                                  "U+0007"),
    ("42", "[subscribers][0].interest: expected a string"),
])
def test_bad_interest_names_the_key(tmp_path: Path, value: str, message: str) -> None:
    path = config_with(tmp_path, f'[[subscribers]]\nname = "a"\ninterest = {value}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "config.toml:3:" in str(caught.value) or "config.toml: " in str(caught.value)


def test_interest_at_the_bound_is_fine(tmp_path: Path) -> None:
    text = ("a" * 9 + " ") * (MAX_INTEREST // 10 - 1) + "b" * 10
    assert len(text) == MAX_INTEREST
    path = config_with(tmp_path, f'[[subscribers]]\nname = "a"\ninterest = "{text}"\n')
    assert load_config(path).subscribers[0].interest == text


def test_ranking_table(tmp_path: Path) -> None:
    (tmp_path / "models" / "mini").mkdir(parents=True)
    path = config_with(tmp_path, '[ranking]\nsemantic = false\nmodel = "models/mini"\n')
    ranking = load_config(path).ranking
    assert ranking.semantic is False and ranking.model == (tmp_path / "models" / "mini")
    default = load_config(config_with(tmp_path, "")).ranking
    assert default.semantic is True and default.model is None


@pytest.mark.parametrize(("text", "message"), [
    ('[ranking]\nmodel = "nowhere"\n', "config.toml:2: [ranking].model: "),
    ('[ranking]\nmodel = ""\n', "[ranking].model: is empty"),
    ('[ranking]\nmodel = 3\n', "[ranking].model: expected a path"),
    ('[ranking]\nsemantic = "yes"\n', "[ranking].semantic: expected true or false"),
    ('[ranking]\nsemantics = true\n', "[ranking].semantics: unknown key; did you mean "
                                      "'semantic'?"),
    ('ranking = 1\n', "ranking: expected a [ranking] table"),
])
def test_bad_ranking_table_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, text))
    assert message in str(caught.value)


def test_missing_model_folder_says_what_to_point_at(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere is not a folder; point it at a folder "
                                          "holding an ONNX sentence-embedding model"):
        load_config(config_with(tmp_path, '[ranking]\nmodel = "nowhere"\n'))


def test_interest_alone_on_the_command_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    dump = write_dump(tmp_path / "p.json")
    code, out, err = cli(capsys, "rank", str(dump), "--interest",
                         "robot manipulation and grasping with tactile sensors",
                         "--no-semantic", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows and topic_of(rows[0]["title"]) == "robot"
    assert {m["term"] for m in rows[0]["matches"]} & {"tactile", "grasping", "robot"}


def test_interest_with_keywords(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = write_dump(tmp_path / "p.json")
    args = ["rank", str(dump), "-k", "learning", "--no-semantic", "--json"]
    code, out, _ = cli(capsys, *args)
    plain = json.loads(out)
    code, out, err = cli(capsys, *args, "--interest", "hospital patients and radiology")
    assert code == 0, err
    steered = json.loads(out)
    topics = [topic_of(r["title"]) for r in steered]
    assert topics[:3] == ["medical"] * 3 and topics[:5].count("medical") >= 4
    before = [topic_of(r["title"]) for r in plain]
    assert before[:5].count("medical") < topics[:5].count("medical")


def test_interest_replaces_the_subscribers_own(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dump = write_dump(tmp_path / "p.json")
    path = config_with(tmp_path, '[[subscribers]]\nname = "a"\nkeywords = ["learning"]\n'
                                 'interest = "hospital patients and radiology"\n'
                                 '[ranking]\nsemantic = false\n')
    code, out, _ = cli(capsys, "rank", str(dump), "--config", str(path), "--json")
    assert code == 0 and topic_of(json.loads(out)[0]["title"]) == "medical"
    code, out, _ = cli(capsys, "rank", str(dump), "--config", str(path), "--json",
                       "--interest", "language model agents and text")
    assert code == 0 and topic_of(json.loads(out)[0]["title"]) == "language"
    assert not (tmp_path / "data").exists()  # rank creates no store


@pytest.mark.parametrize(("value", "message"), [
    ("x" * (MAX_INTEREST + 1), f"--interest: at most {MAX_INTEREST} characters"),
    ("robots\x07", "--interest: remove the control characters"),
    ("  ...  ", "--interest '  ...  ': say what you want to read in words"),
])
def test_bad_interest_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          value: str, message: str) -> None:
    dump = write_dump(tmp_path / "p.json")
    code, out, err = cli(capsys, "rank", str(dump), "--interest", value, "--json")
    assert code == 2 and out == "" and message in err


@pytest.mark.parametrize("term", ["the", "of the", "C++", "C#"])
def test_keywords_that_would_match_every_paper_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], term: str) -> None:
    path = config_with(tmp_path, f'[[subscribers]]\nname = "a"\nkeywords = ["{term}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "[subscribers][0].keywords[0]" in str(caught.value)
    assert "nearly every paper" in str(caught.value)
    dump = write_dump(tmp_path / "p.json")
    code, _, err = cli(capsys, "rank", str(dump), "-k", term, "--no-semantic")
    assert code == 2 and "nearly every paper" in err
    assert load_config(config_with(tmp_path, '[[subscribers]]\nname = "a"\n'
                                             'keywords = ["C++ compiler", "3D"]\n'))
