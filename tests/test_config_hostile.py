"""Hostile config input: every one is exit 2 and one line naming the key, never a crash.

Each test writes a real config file and runs the real command line; the folders a run
publishes into are checked before anything is recorded.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import DATA, DEFAULT_SUBSCRIBERS, Project, dated

from digest import config as config_module
from digest.cli import main

SUB = '[[subscribers]]\nname = "a"\n'
SMTP = '[smtp]\nhost = "localhost"\nfrom = "digest@example.org"\n'
HUGE = "9" * 400


def run_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str]:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    code = main(["run", "--config", str(path)])
    _, err = capsys.readouterr()
    return code, err


def assert_config_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("digest: error: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [20, 300, 450, 600, 5_000, 200_000])
def test_deeply_nested_arrays_are_a_config_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 depth: int) -> None:
    code, err = run_config(tmp_path, capsys, f"[digest]\nfeed_size = {nested(depth)}\n")
    assert_config_error(code, err, "config.toml:2: ")
    assert "feed_size" in err and ("nested too deeply" in err or "more than 8 levels" in err)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("text", [
    SUB + f"keywords = [{{ term = \"x\", weight = {nested(40)} }}]\n",
    SUB + "exclude = " + "[" * 30 + '"x"' + "]" * 30 + "\n",
    "[digest]\nintro = " + "{ a = " * 700 + "1" + " }" * 700 + "\n",
    "[digest]\n" + ".".join(["a"] * 3_000) + " = 1\n",
    "top = " + nested(100_000) + "\n",
])
def test_nesting_anywhere_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            text: str) -> None:
    code, err = run_config(tmp_path, capsys, text)
    assert_config_error(code, err)
    assert "nested too deeply" in err or "more than 8 levels" in err


# Every numeric key, with the table it lives in and how it is named in the message.
NUMERIC_KEYS = [
    ("[digest]\n", "feed_size", "[digest].feed_size"),
    ("[digest]\n", "also_new", "[digest].also_new"),
    ("[digest]\n", "poll_interval", "[digest].poll_interval"),
    (SUB, "min_score", "[subscribers][0].min_score"),
    (SUB, "max_items", "[subscribers][0].max_items"),
    (SMTP, "port", "[smtp].port"),
    (SMTP, "max_per_minute", "[smtp].max_per_minute"),
    (SMTP, "timeout", "[smtp].timeout"),
    ('[[sources]]\nname = "s"\ntype = "hf-daily"\n', "max_results", "[sources][0].max_results"),
]


@pytest.mark.parametrize(("table", "key", "named"), NUMERIC_KEYS)
@pytest.mark.parametrize("value", [HUGE, f"-{HUGE}", str(2**63), "9.9e300"])
def test_huge_numbers_are_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         table: str, key: str, named: str, value: str) -> None:
    code, err = run_config(tmp_path, capsys, f"{table}{key} = {value}\n")
    assert_config_error(code, err, key)
    assert named in err
    assert "at most" in err or "a week" in err or "expected an integer" in err


@pytest.mark.parametrize("field", ["keywords", "exclude"])
@pytest.mark.parametrize("value", [HUGE, "1e300", "1001"])
def test_huge_keyword_weights_are_a_config_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 field: str, value: str) -> None:
    code, err = run_config(tmp_path, capsys,
                           SUB + f'{field} = [{{ term = "x", weight = {value} }}]\n')
    assert_config_error(code, err, f"[subscribers][0].{field}[0]: weight must be a number "
                        f"above 0 and at most {config_module.MAX_WEIGHT}")


def test_a_number_past_the_digit_limit_names_the_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_config(tmp_path, capsys, "[digest]\nfeed_size = " + "9" * 5_000 + "\n")
    assert_config_error(code, err, "config.toml:2: feed_size: invalid TOML: a number with too "
                        "many digits")


def test_feed_size_beyond_sqlite_is_refused_before_any_store(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    dated(project.drop(DATA / "shape_blank.txt"))
    project.write_config(DEFAULT_SUBSCRIBERS, extra="feed_size = 99999999999999999999")
    code = main(["run", "--config", str(project.config_path)])
    _, err = capsys.readouterr()
    assert_config_error(code, err, "[digest].feed_size: must be at least 1 and at most "
                        f"{config_module.MAX_FEED_SIZE}")
    assert not (project.root / "data").exists()


def test_every_upper_bound_itself_runs(project: Project,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The bounds are usable values: a run at every one of them works end to end."""
    c = config_module
    project.write_config(
        "[[subscribers]]\nname = \"all\"\n"
        f"max_items = {c.MAX_ITEMS}\nmin_score = {c.MAX_MIN_SCORE}\n"
        "[[subscribers]]\nname = \"ana\"\n"
        f"keywords = [{{ term = \"CLIP\", weight = {c.MAX_WEIGHT} }}]\n",
        extra=f"feed_size = {c.MAX_FEED_SIZE}\nalso_new = {c.MAX_ALSO_NEW}\n"
              f"poll_interval = {c.MAX_POLL_INTERVAL}")
    dated(project.drop(DATA / "shape_blank.txt"))
    assert main(["run", "--config", str(project.config_path)]) == 0, capsys.readouterr().err
    store = sqlite3.connect(project.root / "data" / "digest.sqlite3")
    try:
        assert store.execute("SELECT count(*) FROM issues").fetchone()[0] == 2
    finally:
        store.close()


PATH_KEYS = [
    ("[digest]\n", "inbox", "[digest].inbox"),
    ("[digest]\n", "data_dir", "[digest].data_dir"),
    ("[digest]\n", "feeds_dir", "[digest].feeds_dir"),
    ("[digest]\n", "templates", "[digest].templates"),
    ('[[sources]]\nname = "s"\ntype = "folder"\n', "path", "[sources][0].path"),
    (SMTP, "ca_file", "[smtp].ca_file"),
]


@pytest.mark.parametrize(("table", "key", "named"), PATH_KEYS)
@pytest.mark.parametrize("char", ["\\u0000", "\\n", "\\u0001", "\\u007f"])
def test_control_characters_in_paths_are_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str, named: str,
        char: str) -> None:
    code, err = run_config(tmp_path, capsys, f'{table}{key} = "a{char}b"\n')
    assert_config_error(code, err, f"{named}: contains the control character U+")
    assert "\x00" not in err


@pytest.mark.parametrize(("line", "named"), [
    ('[digest]\ntitle = "a\\u0000b"', "[digest].title"),
    ('[digest]\ntitle = "two\\nlines"', "[digest].title"),
    ('[digest]\nsite_url = "https://e.org/\\u0000"', "[digest].site_url"),
    ('[digest]\ntimezone = "UTC\\u0000"', "[digest].timezone"),
    ('[digest]\nintro = "fine\\nbut \\u0001 is not"', "[digest].intro"),
    (SUB + 'keywords = ["a\\u0000"]', "[subscribers][0].keywords[0]"),
    (SUB + 'keywords = [{ term = "b\\u0008" }]', "[subscribers][0].keywords[0].term"),
    (SUB + 'cadence = "daily\\u0000"', "[subscribers][0].cadence"),
    ('[smtp]\nhost = "smtp\\u0000"\nfrom = "digest@example.org"', "[smtp].host"),
    (SMTP + 'username = "u"\npassword_env = "PASS\\u0000WORD"', "[smtp].password_env"),
    ('[[sources]]\nname = "s"\ntype = "arxiv"\nquery = "a\\u0000"', "[sources][0].query"),
])
def test_control_characters_in_any_string_are_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, named: str) -> None:
    code, err = run_config(tmp_path, capsys, line + "\n")
    assert_config_error(code, err, f"{named}: contains the control character U+")


def test_multi_line_text_may_still_hold_line_breaks(project: Project,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config('[[subscribers]]\nname = "all"\nkeywords = ["CLIP\\tpretraining"]\n',
                         extra='intro = """\nLine one.\n\tLine two.\n"""')
    dated(project.drop(DATA / "shape_blank.txt"))
    assert main(["run", "--config", str(project.config_path)]) == 0, capsys.readouterr().err


def test_a_key_with_a_line_break_stays_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_config(tmp_path, capsys, '[digest]\n"feed\\nsize" = 1\n')
    assert_config_error(code, err, "[digest].feed\\nsize: unknown key")


def test_a_symlink_loop_as_a_path_is_a_config_error(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one").symlink_to(tmp_path / "two")
    (tmp_path / "two").symlink_to(tmp_path / "one")
    code, err = run_config(tmp_path, capsys, '[digest]\ninbox = "one/inbox"\n')
    assert_config_error(code, err, "[digest].inbox: ", "cannot be used as a path")


# -- output folders: checked before anything is ingested or recorded -----------------------

def store_rows(project: Project) -> int | None:
    """Papers in the store, or None when there is no store at all."""
    path = project.root / "data" / "digest.sqlite3"
    if not path.exists():
        return None
    store = sqlite3.connect(path)
    try:
        return int(store.execute("SELECT count(*) FROM papers").fetchone()[0])
    finally:
        store.close()


@pytest.mark.parametrize(("blocker", "named"), [
    ("feeds", "[digest].feeds_dir: {path} is not a folder"),
    ("data/digests", "[digest].data_dir: {path} is not a folder"),
    ("data/digests/ana", "[digest].data_dir: {path} is not a folder"),
    ("feeds/.digest-tmp", "[digest].feeds_dir: {path} is not a folder (digest writes its "
                          "temporary files there)"),
])
def test_an_output_folder_that_is_a_file_stops_the_run_before_ingest(
        project: Project, capsys: pytest.CaptureFixture[str], blocker: str,
        named: str) -> None:
    path = project.root / blocker
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder")
    dated(project.drop(DATA / "shape_blank.txt"))
    code = main(["run", "--config", str(project.config_path)])
    _, err = capsys.readouterr()
    assert_config_error(code, err, named.format(path=path), str(project.config_path))
    assert store_rows(project) is None  # nothing ingested, nothing recorded
    assert not list((project.root / "data").rglob("*.md"))
    path.unlink()  # fixed: the next run publishes everything, nothing was lost
    assert main(["run", "--config", str(project.config_path)]) == 0
    out, _ = capsys.readouterr()
    assert "digest for ana: issue 1, 4 new papers" in out
    assert (project.root / "feeds" / "ana.atom").is_file()


def test_a_quiet_run_checks_only_the_folders_it_can_write(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config(DEFAULT_SUBSCRIBERS)
    dated(project.drop(DATA / "shape_blank.txt"))
    assert main(["run", "--config", str(project.config_path)]) == 0
    blocker = project.root / "site" / "all" / ".digest-tmp"
    blocker.write_text("not a folder")  # in the folder of a reader with nothing new
    capsys.readouterr()
    assert main(["run", "--config", str(project.config_path)]) == 0  # nothing to write there
    assert capsys.readouterr().out.startswith("Nothing new")
    # Their keywords change: their pages are made again, so their folder is checked first.
    project.write_config(DEFAULT_SUBSCRIBERS.replace(
        "max_items = 1000", 'max_items = 1000\nkeywords = ["harbour fog"]'))
    code = main(["run", "--config", str(project.config_path)])
    _, err = capsys.readouterr()
    assert_config_error(code, err, f"[digest].site_dir: {blocker} is not a folder",
                        str(project.config_path))


def test_a_missing_output_folder_under_a_file_is_named(project: Project,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (project.root / "public").write_text("a file")
    text = project.config_path.read_text()
    project.config_path.write_text(text.replace('feeds_dir = "feeds"',
                                                'feeds_dir = "public/feeds"'))
    dated(project.drop(DATA / "shape_blank.txt"))
    code = main(["run", "--config", str(project.config_path)])
    _, err = capsys.readouterr()
    assert_config_error(code, err, f"[digest].feeds_dir: cannot create "
                        f"{project.root / 'public' / 'feeds'}: {project.root / 'public'} is not "
                        "a folder")
    assert store_rows(project) is None


def test_a_folder_where_a_feed_goes_stops_the_run_before_ingest(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    feed = project.root / "feeds" / "all.atom"
    feed.mkdir(parents=True)
    dated(project.drop(DATA / "shape_blank.txt"))
    code = main(["run", "--config", str(project.config_path)])
    _, err = capsys.readouterr()
    assert_config_error(code, err, f"[digest].feeds_dir: {feed} is a folder, not a file")
    assert store_rows(project) is None


@pytest.mark.parametrize(("value", "needle"), [
    ("Name <notanaddr>", "is not one e-mail address"),
    ("a <a@example.org>, b <b@example.org>", "is not one e-mail address"),
    ("team: a@example.org;", "is not an e-mail address"),
    ("Name <a@example.org> trailing", "is not one e-mail address"),
    ("Name <ü@example.org>", "is not one e-mail address"),
    ("N" * 201 + " <a@example.org>", "at most 200"),
    ("not an address", "is not an e-mail address"),
])
def test_a_bad_sender_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        value: str, needle: str) -> None:
    code, err = run_config(tmp_path, capsys, f'[smtp]\nhost = "localhost"\nfrom = "{value}"\n')
    assert_config_error(code, err, "config.toml:3: [smtp].from: ", needle)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("value", "name"), [
    ("Papers Digest <digest@example.org>", "Papers Digest"),
    ('\\"Doe, J.\\" <digest@example.org>', "Doe, J."),
    ("Lesezirkel für Papiere 论文 <digest@example.org>", "Lesezirkel für Papiere 论文"),
    ("  Spaced   Out  <digest@example.org> ", "Spaced Out"),
    ("<digest@example.org>", None),
    ("digest@example.org", None),
])
def test_a_sender_with_or_without_a_display_name(tmp_path: Path, value: str,
                                                 name: str | None) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[smtp]\nhost = "localhost"\nfrom = "{value}"\n', encoding="utf-8")
    smtp = config_module.load_config(path).smtp
    assert smtp is not None
    assert (smtp.from_name, smtp.sender) == (name, "digest@example.org")
