"""The README keeps its promises: the two commands, every command and config key documented."""

from __future__ import annotations

import re

from conftest import ROOT

from digest.cli import cli
from digest.config import (
    _DIGEST_KEYS,
    _RANKING_KEYS,
    _SMTP_KEYS,
    _SOURCE_KEYS,
    _STORE_KEYS,
    _SUBSCRIBER_KEYS,
)

README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, re.S)


def test_readme_opens_with_run_then_test_commands() -> None:
    run_cmd, test_cmd = commands()[:2]
    assert run_cmd.endswith("digest run") and "pip install ." in run_cmd
    assert test_cmd.endswith("pytest") and "'.[dev,semantic]'" in test_cmd


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_cmd = commands()[1]
    assert test_cmd in ci


def test_every_command_and_config_key_is_documented() -> None:
    for name in cli.commands:
        assert f"`digest {name}" in README, name
    for key in (*_DIGEST_KEYS, *_SUBSCRIBER_KEYS, *_SMTP_KEYS, *_SOURCE_KEYS, *_RANKING_KEYS,
                *_STORE_KEYS):
        assert f"| `{key}` |" in README, key


def test_bundled_config_parses_and_points_at_the_samples() -> None:
    from digest.config import load_config
    from digest.sources import inbox_files, read_dump

    config = load_config(ROOT / "config.toml")
    dumps = [read_dump(p) for p in inbox_files(config.inbox)]
    assert {d.shape for d in dumps} == {"blank-separated", "with-metadata", "compact"}
    assert all(not d.warnings for d in dumps)
