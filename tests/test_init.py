"""`digest init`: a new folder that runs at once, from the starter bundled in the package."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import tree_state

from digest import init
from digest.cli import main
from digest.config import load_config
from digest.sources import read_dump


def digest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_then_run_makes_a_digest_and_a_site(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "my digest"
    code, out, err = digest(capsys, "init", str(folder))
    assert code == 0, err
    assert (folder / "config.toml").is_file()
    dumps = sorted((folder / "inbox").iterdir())
    assert [p.name for p in dumps] == ["sample-daily-papers.txt"]
    assert 5 <= len(read_dump(dumps[0]).papers) <= 8 and not read_dump(dumps[0]).warnings
    lines = out.splitlines()
    assert [line.split("#")[0].strip() for line in lines[-3:]] == [
        "digest run", "digest serve", "digest preview"]
    assert "http://127.0.0.1:8000/" in lines[-2]
    assert f"cd '{folder}'" in out or "cd 'my digest'" in out  # quoted: the name has a space
    code, out, err = digest(capsys, "run", "--config", str(folder / "config.toml"), "--json")
    assert code == 0, err
    report = json.loads(out)
    me = report["subscribers"]["me"]
    assert me["issue"] == 1 and me["new"] == len(read_dump(dumps[0]).papers)
    assert 0 < me["matched"] < me["new"]  # the keywords pick some, not all (one is excluded)
    assert Path(me["markdown"]).is_file()
    assert (folder / "site" / "index.html").is_file()
    assert (folder / "site" / "me").is_dir() and (folder / "feeds" / "me.atom").is_file()
    assert "Retrieval-Augmented" in Path(me["markdown"]).read_text(encoding="utf-8")


def test_the_starter_config_explains_every_line(tmp_path: Path) -> None:
    made = init(tmp_path)
    text = made.config.read_text(encoding="utf-8")
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if re.match(r"^\s*[a-z_]+\s*=", line):  # a setting: explained on it or just above
            assert "#" in line or lines[n - 1].lstrip().startswith("#"), line
    raw = tomllib.loads(text)
    assert set(raw) == {"digest", "subscribers"}  # [smtp] and [[sources]]: commented out
    config = load_config(made.config)
    (me,) = config.subscribers
    assert me.name == made.subscriber and me.keywords and me.interest and me.email is None
    assert config.site_url == "http://127.0.0.1:8000/" and config.inbox == tmp_path / "inbox"
    examples = "\n".join(line[2:] for line in lines
                         if re.match(r"^# (\[\[?[a-z]+\]\]?|[a-z_]+ = )", line))
    commented = tomllib.loads(examples)  # the settings shown commented out are valid TOML
    assert commented["smtp"]["from"] == "Papers Digest <digest@example.org>"
    assert commented["sources"][0]["type"] == "hf-daily"


def test_init_refuses_to_overwrite_a_config(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.toml").write_text("# mine\n", encoding="utf-8")
    before = tree_state(tmp_path)
    code, out, err = digest(capsys, "init", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("digest: error: ") and "already exists" in err
    assert "never overwrites" in err and err.count("\n") == 1
    assert tree_state(tmp_path) == before  # no inbox either


def test_init_defaults_to_the_working_folder_and_keeps_an_existing_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inbox").mkdir()
    mine = tmp_path / "inbox" / "sample-daily-papers.txt"
    mine.write_text("my own notes\n", encoding="utf-8")
    code, out, _ = digest(capsys, "init")
    assert code == 0 and (tmp_path / "config.toml").is_file()
    assert mine.read_text(encoding="utf-8") == "my own notes\n"
    assert "cd " not in out  # already there
    code, _, err = digest(capsys, "init")
    assert code == 2 and "already exists" in err


def test_init_into_a_file_is_a_usage_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    code, _, err = digest(capsys, "init", str(target))
    assert code == 2 and "digest: error: " in err
