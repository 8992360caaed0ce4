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


def test_every_help_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = digest(capsys, "--help")
    assert code == 0 and "Example:" in out and "digest init my-digest" in out
    for name in cli.commands:
        code, sub, _ = digest(capsys, name, "--help")
        assert code == 0
        example = sub.split("Example:", 1)
        assert len(example) == 2, f"digest {name} --help has no Example"
        first = example[1].strip().splitlines()[0]
        assert first.startswith(f"digest {name}"), (name, first)  # kept on its own line


def test_version_names_the_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    import digest as package

    code, out, _ = digest(capsys, "--version")
    assert code == 0 and out == f"digest, version {version('papers-digest')}\n"
    assert package.__version__ == version("papers-digest")


def test_help_imports_only_click_and_the_cli() -> None:
    heavy = ("numpy", "jinja2", "justhtml", "feedgen", "feedparser", "httpx", "css_inline",
             "markdown", "waitress", "Stemmer", "sqlite3", "digest.pipeline", "digest.config",
             "digest.store", "digest.rank", "digest.models")
    code = ("import sys; from digest.cli import main; rc = main(['--help']); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_the_lazy_package_keeps_its_public_api() -> None:
    import digest as package
    from digest import load_config, preview, read_dump, run
    from digest.pipeline import run as pipeline_run

    assert run is pipeline_run and callable(preview) and callable(load_config)
    assert callable(read_dump)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018


def test_shell_completion_through_the_console_script() -> None:
    import os

    exe = shutil.which("digest", path=str(Path(sys.executable).parent))
    assert exe
    source = subprocess.run([exe], env={**os.environ, "_DIGEST_COMPLETE": "bash_source"},
                            capture_output=True, text=True, check=False)
    assert source.returncode == 0 and "_digest_completion" in source.stdout
    assert "complete -o nosort -F _digest_completion digest" in source.stdout
    words = subprocess.run([exe], env={**os.environ, "_DIGEST_COMPLETE": "bash_complete",
                                       "COMP_WORDS": "digest pre", "COMP_CWORD": "1"},
                           capture_output=True, text=True, check=False)
    assert words.returncode == 0 and words.stdout.split() == ["plain,preview"]
    for shell in ("zsh", "fish"):
        proc = subprocess.run([exe], env={**os.environ, "_DIGEST_COMPLETE": f"{shell}_source"},
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and "_DIGEST_COMPLETE" in proc.stdout, shell


def test_preview_eml_without_smtp_uses_placeholders(project: Project,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from email import message_from_bytes, policy

    assert project.config().smtp is None
    dated(project.drop(DATA / "shape_meta.txt"))
    before = tree_state(project.root)
    code, out, err = digest(capsys, "preview", "--config", str(project.config_path),
                            "--format", "eml")
    assert code == 0, err
    files = [Path(line) for line in out.splitlines()]
    try:
        assert len(files) == 2  # ana, and 'all', who has no address
        msgs = {f.name.split("-")[2]: message_from_bytes(f.read_bytes(), policy=policy.default)
                for f in files}
        for name, msg in msgs.items():
            sender = msg["From"].addresses[0]  # type: ignore[attr-defined]
            assert (sender.display_name, sender.addr_spec) == ("Test digest",
                                                               "digest@digest.invalid")
            assert str(msg["Message-ID"]).endswith("@digest.invalid>")
            assert msg.get_content_type() == "multipart/alternative", name
        assert msgs["ana"]["To"].addresses[0].addr_spec == "ana@example.org"  # type: ignore[attr-defined]
        assert msgs["all"]["To"].addresses[0].addr_spec == "all@digest.invalid"  # type: ignore[attr-defined]
        assert "sender is digest@digest.invalid" in err
        assert "all has no e-mail address: the preview is addressed to all@digest.invalid" in err
        assert all(project.root not in f.parents for f in files)
    finally:
        for f in files:
            f.unlink()
    assert tree_state(project.root) == before
    config = project.config()
    assert config.smtp is None and config.subscriber("all").email is None  # preview only


def test_preview_json(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    dated(project.drop(DATA / "shape_meta.txt"))
    code, out, err = digest(capsys, "preview", "--config", str(project.config_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"subscribers", "dumps", "rejected", "warnings"}
    ana, all_ = report["subscribers"]["ana"], report["subscribers"]["all"]
    assert (ana["issue"], ana["new"], all_["new"], all_["matched"]) == (1, 4, 4, 4)
    assert ana["matched"] == len(ana["items"]) and ana["others"] == 4 - ana["matched"]
    assert set(ana["items"][0]) == {"rank", "title", "key", "score", "url", "terms"}
    assert any(item["terms"] for item in ana["items"])
    assert [i["rank"] for i in ana["items"]] == list(range(1, len(ana["items"]) + 1))
    code, out, _ = digest(capsys, "preview", "--config", str(project.config_path), "--json",
                          "--subscriber", "ana")
    assert list(json.loads(out)["subscribers"]) == ["ana"]
    code, _, err = digest(capsys, "preview", "--config", str(project.config_path), "--json",
                          "--format", "html")
    assert code == 2 and "--json" in err


def test_run_exits_3_while_due_mail_is_undelivered(project: Project,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from mailserver import SUBSCRIBERS, Server, smtp_table

    server = Server()  # its port, but not listening yet: connection refused
    project.write_config(SUBSCRIBERS, extra=smtp_table(server.port))
    dated(project.drop(DATA / "shape_meta.txt"))
    args = ["--config", str(project.config_path)]
    code, out, err = digest(capsys, "run", *args)
    assert code == 3, err
    assert "digest for ana: issue 1" in out and "e-mail: 0 sent, 2 to retry, 0 failed" in out
    assert "could not be delivered" in err and "exit 3" in err
    code, out, _ = digest(capsys, "status", *args, "--json")
    rows = json.loads(out)["deliveries"]
    assert code == 0 and [(r["subscriber"], r["status"]) for r in rows] == [
        ("ana", "pending"), ("bo", "pending")]
    assert all("cannot connect" in r["last_error"] for r in rows)
    server.start()
    try:
        code, out, err = digest(capsys, "run", *args)  # the first retry is due at once
        assert code == 0, err
        assert "e-mail: 2 sent, 0 to retry, 0 failed" in out
        assert len(server.recorder.received) == 2
        code, out, _ = digest(capsys, "status", *args, "--json")
        assert json.loads(out)["deliveries"] == []
        code, out, err = digest(capsys, "run", *args, "--json")  # nothing new, nothing due
        assert code == 0 and json.loads(out)["email"]["sent"] == 0, err
    finally:
        server.stop()


def test_daemon_once_exits_3_when_its_mail_is_undelivered(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    from mailserver import SUBSCRIBERS, Server, smtp_table

    server = Server()
    project.write_config(SUBSCRIBERS, extra=smtp_table(server.port))
    dated(project.drop(DATA / "shape_meta.txt"))
    args = ["daemon", "--once", "--config", str(project.config_path)]
    code, _, err = digest(capsys, *args)
    assert code == 3, err
    assert "polling every" not in err and "daemon started" not in err
    assert "e-mail: 0 sent, 2 to retry, 0 failed" in err and "exit 3" in err
    server.start()
    try:
        code, _, err = digest(capsys, *args)  # the retry goes out with the next tick
        assert code == 0, err
        assert "e-mail: 2 sent, 0 to retry, 0 failed" in err
        assert len(server.recorder.received) == 2
    finally:
        server.stop()
