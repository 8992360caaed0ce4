"""digest: reading digests and Atom feeds of new papers, ranked by your keywords.

The library API (the CLI is a thin layer over it)::

    from digest import load_config, run, preview, read_dump
    report = run(load_config("config.toml"))
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, load_config
from .errors import ConfigError, DigestError, InputError, StoreError, UsageError
from .models import Digest, Keyword, Paper, ParsedDump, Profile, Ranked, RunReport
from .pipeline import backfill, preview, run
from .rank import Corpus, score_all
from .sources import read_dump

__all__ = [
    "Config", "ConfigError", "Corpus", "Digest", "DigestError", "InputError", "Keyword",
    "Paper", "ParsedDump", "Profile", "Ranked", "RunReport", "StoreError", "UsageError",
    "__version__", "backfill", "load_config", "preview", "read_dump", "run",
    "score_all",
]
