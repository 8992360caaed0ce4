"""The command line: exit codes, one-line errors, JSON shapes, the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, DUMP_DAY, Project, dated, tree_state

from digest.cli import cli, main

Run = tuple[int, str, str]


def digest(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = digest(capsys, "--help")
    assert code == 0
    for name in cli.commands:
        assert name in out
        code, sub, _ = digest(capsys, name, "--help")
        assert code == 0 and "Usage: digest " + name in sub


def test_installed_script_runs_as_a_subprocess() -> None:
    exe = shutil.which("digest", path=str(Path(sys.executable).parent)) or shutil.which("digest")
    assert exe, "the console script 'digest' must be installed"
    proc = subprocess.run([exe, "parse", str(DATA / "shape_compact.txt"), "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["line"] for r in rows] == [3, 5, 7, 9]


def test_run_json_and_nothing_new(project: Project, capsys: pytest.CaptureFixture[str],
                                  shared_dumps: list[Path]) -> None:
    dated(project.drop(shared_dumps[1]))
    code, out, err = digest(capsys, "run", "--config", str(project.config_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["new_papers"] == 35
    all_ = report["subscribers"]["all"]
    assert {k: all_[k] for k in ("issue", "new", "matched")} == {"issue": 1, "new": 35,
                                                                 "matched": 35}
    assert Path(all_["markdown"]).is_file() and Path(all_["html"]).is_file()
    assert report["subscribers"]["ana"]["new"] == 35
    before = tree_state(project.root)
    code, out, _ = digest(capsys, "run", "--config", str(project.config_path))
    assert code == 0 and out.startswith("Nothing new")
    assert tree_state(project.root) == before


def test_parse_json_fields(capsys: pytest.CaptureFixture[str], shared_dumps: list[Path]) -> None:
    code, out, _ = digest(capsys, "parse", str(shared_dumps[1]), "--json", "--date",
                          DUMP_DAY.isoformat())
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 35
    assert set(rows[0]) >= {"title", "abstract", "authors", "date", "upvotes", "links", "source",
                            "line"}
    assert (rows[0]["authors"], rows[0]["date"], rows[0]["line"]) == (4, "2024-05-14", 13)
    assert rows[1]["date"] == "2025-11-04" and rows[1]["date_raw"] == "Nov 4"


def test_rank_with_keywords(capsys: pytest.CaptureFixture[str], shared_dumps: list[Path]) -> None:
    code, out, _ = digest(capsys, "rank", *map(str, shared_dumps), "-k", "CLIP",
                          "-k", "data curation^2", "-x", "survey", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all("survey" not in r["title"].lower() for r in rows)
    top = rows[0]["matches"]
    assert {m["term"] for m in top} & {"CLIP", "data curation"}
    assert all(m["title"] + m["abstract"] > 0 for r in rows for m in r["matches"])


def test_rank_with_a_config_subscriber(project: Project, capsys: pytest.CaptureFixture[str],
                                       shared_dumps: list[Path]) -> None:
    code, out, _ = digest(capsys, "rank", str(shared_dumps[0]), "--config",
                          str(project.config_path), "--subscriber", "ana", "--json")
    assert code == 0 and json.loads(out)
    code, _, err = digest(capsys, "rank", str(shared_dumps[0]), "--config",
                          str(project.config_path))
    assert code == 2 and "choose a subscriber with --subscriber (have: ana, all)" in err
    assert not (project.root / "data").exists()  # rank touches no store


@pytest.mark.parametrize(("args", "message"), [
    (["rank", str(DATA / "shape_blank.txt")], "give keywords with -k TERM"),
    (["rank", str(DATA / "shape_blank.txt"), "-k", "x^0"], "weight must be a number above 0"),
    (["parse", str(DATA / "not_a_dump.txt")], "not_a_dump.txt: not a page dump"),
    (["frobnicate"], "No such command"),
])
def test_usage_and_input_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                       message: str) -> None:
    code, _, err = digest(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err


CONFIG_ERRORS = [
    ('[digest]\nfeed_sise = 10\n', "config.toml:2: [digest].feed_sise: unknown key; did you "
                                   "mean 'feed_size'?"),
    ('[[subscribers]]\nname = "a"\nmax_items = "ten"\n',
     "config.toml:3: [subscribers][0].max_items: expected an integer, got 'ten'"),
    ('[[subscribers]]\nemail = "a@b.org"\n', "[subscribers][0].name: missing"),
    ('[[subscribers]]\nname = "a"\nkeywords = ["ok", { term = "x", wieght = 2 }]\n',
     "[subscribers][0].keywords[1]: unknown key 'wieght'; did you mean 'weight'?"),
    ('[[subscribers]]\nname = "a"\nkeywrds = ["x"]\n', "did you mean 'keywords'?"),
    ('[digest]\ntitle = "x\n', "config.toml:2: invalid TOML"),
    ('[digest]\nsite_url = "example.org"\n', "is not an absolute http(s) URL"),
    ('[digest]\ntimezone = "Mars/Base"\n', "unknown time zone 'Mars/Base'"),
]


@pytest.mark.parametrize(("text", "message"), CONFIG_ERRORS)
def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    code, out, err = digest(capsys, "run", "--config", str(path))
    assert code == 2 and out == ""
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_all_config_problems_are_reported_at_once(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[digest]\nfeed_size = 0\ncolour = "red"\n[[subscribers]]\nname = "A B"\n')
    code, _, err = digest(capsys, "run", "--config", str(path))
    assert code == 2
    assert "feed_size: must be at least 1" in err and "colour: unknown key" in err
    assert "'A B' is not a valid name" in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = digest(capsys, "run", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml: no such file" in err


def test_runtime_failure_exits_1_in_one_line(project: Project,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (project.root / "data").write_text("a file where the data folder should be")
    dated(project.drop(DATA / "shape_blank.txt"))
    code, _, err = digest(capsys, "run", "--config", str(project.config_path))
    assert code == 1
    assert err.startswith("digest: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_preview_prints_markdown_or_writes_html(project: Project,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    dated(project.drop(DATA / "shape_meta.txt"))
    before = tree_state(project.root)
    code, out, _ = digest(capsys, "preview", "--config", str(project.config_path),
                          "--subscriber", "ana")
    assert code == 0 and out.startswith("# Test digest: 4 new papers for ana")
    code, out, _ = digest(capsys, "preview", "--config", str(project.config_path),
                          "--subscriber", "ana", "--format", "html")
    html_file = Path(out.strip())
    try:
        assert code == 0 and html_file.read_text().startswith("<!DOCTYPE html>")
        assert project.root not in html_file.parents
    finally:
        html_file.unlink()
    assert tree_state(project.root) == before
    code, _, err = digest(capsys, "preview", "--config", str(project.config_path),
                          "--subscriber", "zed")
    assert code == 2 and "no subscriber named 'zed' (have: ana, all)" in err


def test_ingest_backfills(project: Project, capsys: pytest.CaptureFixture[str],
                          shared_dumps: list[Path]) -> None:
    code, out, _ = digest(capsys, "ingest", str(shared_dumps[0]), str(shared_dumps[0]),
                          "--config", str(project.config_path))
    assert code == 0
    assert "103 new papers; the store now holds 103." in out
    code, out, _ = digest(capsys, "ingest", str(shared_dumps[1]), "--config",
                          str(project.config_path), "--json")
    assert json.loads(out)["new_papers"] == 13


def test_missing_inbox_is_a_warning(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.inbox.rmdir()
    code, out, err = digest(capsys, "run", "--config", str(project.config_path))
    assert code == 0 and "0 new papers" in out
    assert "the inbox folder does not exist" in err and "[digest].inbox" in err


@pytest.mark.parametrize("kw", ["CLIP^inf", "CLIP^nan", "", "  ", "^^", "x^-1"])
def test_bad_keywords_on_the_command_line(capsys: pytest.CaptureFixture[str], kw: str) -> None:
    code, out, err = digest(capsys, "rank", str(DATA / "shape_blank.txt"), "-k", kw, "--json")
    assert code == 2 and out == "" and f"-k {kw!r}" in err


@pytest.mark.parametrize(("line", "message"), [
    ("keywords = [{ term = \"x\", weight = nan }]", "weight must be a number above 0"),
    ("keywords = [{ term = \"x\", weight = inf }]", "weight must be a number above 0"),
    ("min_score = nan", "min_score: must be a number of 0 or more"),
])
def test_non_finite_numbers_in_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      line: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[[subscribers]]\nname = "a"\n{line}\n')
    code, _, err = digest(capsys, "run", "--config", str(path))
    assert code == 2 and message in err


def test_rank_config_subscriber_plus_extra_excludes(project: Project,
                                                   capsys: pytest.CaptureFixture[str],
                                                   shared_dumps: list[Path]) -> None:
    args = ["rank", str(shared_dumps[0]), "--config", str(project.config_path),
            "--subscriber", "ana", "--json"]
    code, out, _ = digest(capsys, *args)
    before = json.loads(out)
    assert any(m["term"] == "CLIP" for r in before for m in r["matches"])
    code, out, _ = digest(capsys, *args, "-x", "CLIP")
    after = json.loads(out)
    assert code == 0 and 0 < len(after) < len(before)
    assert not any(m["term"] == "CLIP" for r in after for m in r["matches"])


def test_template_errors_stop_the_run_before_ingest(project: Project,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    custom = project.root / "tpl"
    custom.mkdir()
    project.write_config("[[subscribers]]\nname = \"all\"\n", extra='templates = "tpl"')
    dated(project.drop(DATA / "shape_blank.txt"))
    (custom / "digest.md.j2").write_text("line one\n{% if %}\n")
    code, _, err = digest(capsys, "run", "--config", str(project.config_path))
    assert code == 2 and f"{custom / 'digest.md.j2'}:2: template error" in err
    assert err.count("\n") == 1 and not (project.root / "data" / "digest.sqlite3").exists()
    (custom / "digest.md.j2").write_text("{{ digest.nope.deeper }}\n")
    code, _, err = digest(capsys, "run", "--config", str(project.config_path))
    assert code == 2 and f"{custom / 'digest.md.j2'}: template error" in err
    assert "Traceback" not in err and "internal error" not in err
    (custom / "digest.md.j2").unlink()
    code, out, _ = digest(capsys, "run", "--config", str(project.config_path))
    assert code == 0 and "digest for all: issue 1, 4 new papers" in out  # nothing was lost
