"""digest: reading digests and Atom feeds of new papers, ranked by your keywords.

The library API (the CLI is a thin layer over it)::

    from digest import load_config, run, preview, read_dump
    report = run(load_config("config.toml"))

The names are imported on first use (PEP 562), so ``import digest`` (and ``digest --help``)
loads none of the pipeline's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, load_config
    from .errors import ConfigError, DigestError, InputError, StoreError, UsageError
    from .init import init
    from .models import Digest, Keyword, Paper, ParsedDump, Profile, Ranked, RunReport
    from .pipeline import backfill, preview, run
    from .rank import Corpus, score_all
    from .sources import read_dump

    __version__: str

DISTRIBUTION = "papers-digest"  # the name on the package index (import name: digest)
_FALLBACK_VERSION = "0.1.0"  # a source checkout that was never installed

_EXPORTS = {
    "Config": "config", "load_config": "config",
    "ConfigError": "errors", "DigestError": "errors", "InputError": "errors",
    "StoreError": "errors", "UsageError": "errors",
    "init": "init",
    "Digest": "models", "Keyword": "models", "Paper": "models", "ParsedDump": "models",
    "Profile": "models", "Ranked": "models", "RunReport": "models",
    "backfill": "pipeline", "preview": "pipeline", "run": "pipeline",
    "Corpus": "rank", "score_all": "rank",
    "read_dump": "sources",
}

__all__ = [
    "Config", "ConfigError", "Corpus", "Digest", "DigestError", "InputError", "Keyword",
    "Paper", "ParsedDump", "Profile", "Ranked", "RunReport", "StoreError", "UsageError",
    "__version__", "backfill", "init", "load_config", "preview", "read_dump", "run",
    "score_all",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return _FALLBACK_VERSION


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once: later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
