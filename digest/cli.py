"""The command line: a thin layer over digest's library API.

Exit codes: 0 ok, 1 failed, 2 bad input (usage, config, a dump), 3 e-mail that was due could
not be delivered (``run``, ``daemon --once``; everything else was done and printed).

Only click and the standard library are imported at the top: ``digest --help`` stays fast,
and each command imports what it needs.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import ConfigError, DigestError, InputError, UsageError

if TYPE_CHECKING:
    from .models import Keyword, Paper, ParsedDump, Profile, Ranked, RunReport, Vote

CONFIG_HELP = "Config file (default: $DIGEST_CONFIG, then ./config.toml)."
EXIT_UNDELIVERED = 3  # e-mail that was due could not be delivered (failed or to retry)
# What ``preview --format eml`` puts where the config has nothing: no [smtp] table, or a
# subscriber without an address. RFC 2606 reserves .invalid: nothing can ever be sent there.
PREVIEW_DOMAIN = "digest.invalid"
PREVIEW_SENDER = f"digest@{PREVIEW_DOMAIN}"


def _config(path: str | None) -> Any:
    from .config import load_config

    return load_config(path)


def _emit_warnings(warnings: Sequence[str]) -> None:
    for w in warnings:
        click.echo(w, err=True)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from . import __version__  # importlib.metadata: only when asked

    click.echo(f"digest, version {__version__}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version, help="Show the version and exit.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Reading digests and Atom feeds of new papers, ranked by your keywords.

    Exit codes: 0 ok, 1 failed, 2 bad input, 3 e-mail that was due not delivered.

    \b
    Example:
      digest init my-digest && cd my-digest && digest run
    """
    ctx.obj = {"debug": debug}


def _report_dict(report: RunReport) -> dict[str, Any]:
    return {
        "new_papers": report.new_papers,
        "total_papers": report.total_papers,
        "dumps": [{"path": p, "new_papers": report.new_per_dump.get(p, 0)}
                  for p in report.dumps_ingested],
        "duplicates": [{"path": p, "same_as": s} for p, s in report.dumps_duplicate],
        "rejected": report.dumps_rejected,
        "warnings": report.warnings,
        "subscribers": {d["subscriber"]: {k: v for k, v in d.items() if k != "subscriber"}
                        for d in report.digests},
        "feeds_written": report.feeds_written,
        "feeds_unchanged": report.feeds_unchanged,
        "site_written": report.site_written,
        "links": None if report.links is None else {
            "looked_up": report.links.looked_up, "linked": report.links.linked,
            "from_hf": report.links.from_hf, "from_arxiv": report.links.from_arxiv,
            "pending": report.links.pending, "seconds": report.links.seconds,
            "why_pending": list(report.links.why_pending)},
    }


def _shown(path: str) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _print_ingest(report: RunReport) -> None:
    for path in report.dumps_ingested:
        click.echo(f"ingested {_shown(path)}: {report.new_per_dump.get(path, 0)} new papers")
    for path, same in report.dumps_duplicate:
        click.echo(f"skipped {_shown(path)}: identical to {same}, already ingested (no-op)")


def _live_report(progress: _Progress | None = None) -> RunReport:
    """A report that prints warnings and rejected files on stderr as they happen (on a
    line of their own, after any progress line)."""
    from .models import RunReport

    def sink(line: str) -> None:
        if progress is not None:
            progress.end()
        click.echo(line, err=True)

    return RunReport(sink=sink)


def _undelivered(delivery: Any) -> bool:
    """A delivery pass left e-mail that was due unsent (failed, or queued to retry)."""
    return delivery is not None and bool(delivery.failed or delivery.retrying)


def _finish(report: RunReport) -> None:
    """Exit 2 when a file could not be ingested (already reported as it happened), else 3
    when e-mail that was due could not be delivered."""
    if report.dumps_rejected:
        raise SystemExit(2)
    if _undelivered(report.delivery):
        click.echo("digest: e-mail that was due could not be delivered (see `digest status`; "
                   "exit 3)", err=True)
        raise SystemExit(EXIT_UNDELIVERED)


class _Progress:
    """Progress of long work (ingest, links, sending): one updating line on a terminal,
    plain time-stamped log lines otherwise. ``end()`` closes an open terminal line."""

    def __init__(self) -> None:
        self.terminal = sys.stderr.isatty()
        self.open = False

    def __call__(self, line: str) -> None:
        if not self.terminal:
            click.echo(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} digest: {line}", err=True)
            return
        keep = line.startswith(("failed", "will"))  # those stay on screen
        click.echo(f"\r\x1b[2K{line}", err=True, nl=keep)
        self.open = not keep

    def end(self) -> None:
        if self.open:
            click.echo("", err=True)
            self.open = False


def _progress() -> _Progress:
    return _Progress()


def _delivery_dict(report: Any) -> dict[str, Any] | None:
    if report is None:
        return None
    return {"sent": len(report.sent), "retrying": [e for _, e in report.retrying],
            "failed": [e for _, e in report.failed], "not_due": report.not_due}


def _print_delivery(report: Any) -> None:
    if report is None:
        return
    click.echo(f"e-mail: {len(report.sent)} sent, {len(report.retrying)} to retry, "
               f"{len(report.failed)} failed" + (f", {report.not_due} waiting to retry later"
                                                 if report.not_due else ""))


@cli.command("run")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-send", is_flag=True, help="Queue e-mail but do not send it now.")
@click.option("--wait", is_flag=True, help="Wait for another run to finish instead of exiting.")
@click.option("--workers", metavar="N", type=click.IntRange(1, 64), default=1,
              show_default=True,
              help="Make the digests in N processes at once (each reader's is made once).")
def run_cmd(config_path: str | None, as_json: bool, no_send: bool, wait: bool,
            workers: int) -> None:
    """Ingest new dumps, write each subscriber's digest, update feeds, send e-mail.

    Exits 3 (after printing everything) when e-mail that was due could not be
    delivered: it stays queued (see `digest status`) and goes out with a later run.

    With a PostgreSQL store, runs on other hosts share the digests of a long run: each
    reader's next digest is claimed by one worker.

    \b
    Example:
      digest run --config /srv/digest/config.toml --json
      digest run --workers 4
    """
    from .pipeline import run

    progress = _progress()
    try:
        report = run(_config(config_path), report=_live_report(progress), send=not no_send,
                     progress=progress, wait=wait, workers=workers)
    finally:
        progress.end()
    if as_json:
        click.echo(json.dumps({**_report_dict(report),
                               "email": _delivery_dict(report.delivery)}, indent=2))
        _finish(report)
        return
    if not report.changed and not (report.delivery and (report.delivery.sent or
                                                        report.delivery.retrying or
                                                        report.delivery.failed)):
        click.echo("Nothing new: no new dumps in the inbox and no papers waiting for a "
                   "digest. Nothing changed.")
        if report.dumps_duplicate:
            click.echo(f"({len(report.dumps_duplicate)} dump(s) in the inbox were ingested "
                       "before.)")
        _finish(report)
        return
    _print_ingest(report)
    click.echo(f"{report.new_papers} new papers; the store now holds {report.total_papers}.")
    if report.links is not None:
        click.echo(report.links.line())
    for d in report.digests:
        click.echo(f"digest for {d['subscriber']}: issue {d['issue']}, {d['new']} new papers, "
                   f"{d['matched']} matches -> {_shown(str(d['markdown']))} (.html beside it)")
    click.echo(f"feeds: {len(report.feeds_written)} updated, {len(report.feeds_unchanged)} "
               "unchanged")
    if report.site_written:
        click.echo(f"site: {len(report.site_written)} page(s) updated")
    _print_delivery(report.delivery)
    _finish(report)


@cli.command("preview")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--subscriber", metavar="NAME", help="Only this subscriber's digest.")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "eml"]), default="md",
              show_default=True,
              help="md prints Markdown; html and eml (the e-mail) write a temporary file.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (each subscriber's issue and picks).")
@click.argument("dumps", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def preview_cmd(config_path: str | None, subscriber: str | None, fmt: str, as_json: bool,
                dumps: tuple[Path, ...]) -> None:
    """Show the next digest as it would be now, changing nothing on disk.

    With DUMP arguments, as if those dumps were dropped in the inbox now. With
    --format eml and no [smtp] table, the sender is a placeholder (digest@digest.invalid);
    a subscriber without an address gets one too (NAME@digest.invalid).

    \b
    Example:
      digest preview --subscriber ana --format eml new-dump.txt
    """
    from .pipeline import preview

    if as_json and fmt != "md":
        raise UsageError("--json prints the digest's contents; it cannot go with --format "
                         f"{fmt}")
    config = _config(config_path)
    if fmt == "eml":
        config = _eml_preview_config(config)
    report, rendered = preview(config, subscriber=subscriber, dumps=dumps,
                               report=_live_report())
    if as_json:
        click.echo(json.dumps(_preview_dict(report, rendered), indent=2, ensure_ascii=False))
        _finish(report)
        return
    if not rendered:
        who = subscriber or "any subscriber"
        click.echo(f"Nothing new for {who}: the next digest would be empty.", err=True)
        _finish(report)
        return
    import tempfile

    for item in rendered:
        if fmt == "md":
            click.echo(item.markdown)
            continue
        if fmt == "eml" and item.mail is None:
            click.echo(f"{item.digest.profile.name} gets no e-mail (mail = false, or "
                       "unsubscribed)", err=True)
            continue
        data = item.mail.raw if fmt == "eml" and item.mail else item.html.encode("utf-8")
        with tempfile.NamedTemporaryFile(
                "wb", suffix=f".{fmt}", delete=False,
                prefix=f"digest-preview-{item.digest.profile.name}-") as handle:
            handle.write(data)
        click.echo(handle.name)
    _finish(report)


def _eml_preview_config(config: Any) -> Any:
    """The config ``preview --format eml`` renders with: placeholders where it has no
    [smtp] table or a subscriber has no address (noted on stderr); the preview only."""
    if config.smtp is None:
        from .config import SmtpConfig

        click.echo(f"no [smtp] table: the preview's sender is {PREVIEW_SENDER}", err=True)
        config = replace(config, smtp=SmtpConfig(
            host="localhost", port=25, security="none", sender=PREVIEW_SENDER,
            config_path=str(config.path)))
    profiles = []
    for p in config.subscribers:
        if p.email is None and p.mail:
            p = replace(p, email=f"{p.name}@{PREVIEW_DOMAIN}")
            click.echo(f"{p.name} has no e-mail address: the preview is addressed to "
                       f"{p.email}", err=True)
        profiles.append(p)
    return replace(config, subscribers=tuple(profiles))


def _preview_dict(report: RunReport, rendered: Sequence[Any]) -> dict[str, Any]:
    subscribers = {}
    for item in rendered:
        d = item.digest
        subscribers[d.profile.name] = {
            "issue": d.number, "new": d.new_count, "matched": len(d.items),
            "items": [{"rank": r.rank, "title": r.paper.title, "key": r.paper.key,
                       "score": r.score, "url": r.paper.url, "terms": list(r.terms)}
                      for r in d.items],
            "others": d.others_total,
            "mail": item.mail.recipient if item.mail else None,
        }
    return {"subscribers": subscribers, "dumps": report.dumps_ingested,
            "rejected": report.dumps_rejected, "warnings": report.warnings}


def _parse_all(paths: Sequence[Path], today: date | None) -> tuple[list[ParsedDump], list[str]]:
    from .sources import read_dump

    parsed, errors = [], []
    for path in paths:
        try:
            parsed.append(read_dump(path, today=today))
        except InputError as exc:
            errors.append(str(exc))
    for dump in parsed:
        _emit_warnings([str(w) for w in dump.warnings])
    return parsed, errors


def _fail_inputs(errors: Sequence[str]) -> None:
    for e in errors:
        click.echo(f"digest: error: {e}", err=True)
    if errors:
        raise SystemExit(2)


_DATE_OPTION = click.option(
    "--date", "today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
    help="Day the dump was saved, for yearless dates (default: the file's modification date).")


@cli.command("parse")
@click.argument("dumps", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of entries.")
@_DATE_OPTION
def parse_cmd(dumps: tuple[Path, ...], as_json: bool, today: Any) -> None:
    """Print the entries parsed from page dumps.

    \b
    Example:
      digest parse inbox/2026-11-20-daily-papers.txt --json
    """
    parsed, errors = _parse_all(dumps, today.date() if today else None)
    if as_json:
        rows = [{
            "title": p.title, "abstract": p.abstract, "summary": p.summary,
            "authors": p.authors, "author_names": list(p.author_names),
            "date": p.published.isoformat() if p.published else None, "date_raw": p.date_raw,
            "upvotes": p.upvotes, "url": p.url, "links": list(p.links),
            "arxiv_id": p.arxiv_id, "version": p.version, "revision": p.revision,
            "source": p.source, "line": p.line,
            "key": p.key, "page_date": d.page_date.isoformat() if d.page_date else None,
        } for d in parsed for p in d.papers]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for d in parsed:
            page = f", page dated {d.page_date}" if d.page_date else ""
            click.echo(f"{d.path}: {len(d.papers)} entries ({d.shape}{page}), "
                       f"{len(d.warnings)} warnings")
            for p in d.papers:
                extra = [x for x in (f"{p.authors} authors" if p.authors else "",
                                     p.published.isoformat() if p.published else "",
                                     f"{p.upvotes} upvotes" if p.upvotes else "") if x]
                click.echo(f"  {p.line:>5}  {p.title}" + (f"  [{', '.join(extra)}]"
                                                          if extra else ""))
    _fail_inputs(errors)


def _keyword(text: str) -> Keyword:
    from .models import Keyword

    term, sep, weight = text.rpartition("^")
    value = 1.0
    if sep and term.strip():
        try:
            value = float(weight)
        except ValueError:
            raise UsageError(f"-k {text!r}: the weight after ^ must be a number") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"-k {text!r}: the weight must be a number above 0 "
                             "(use -x to exclude)")
    else:
        term = text
    if not re.search(r"\w", term):
        raise UsageError(f"-k {text!r}: a keyword needs letters or digits")
    from .rank import keyword_problem

    problem = keyword_problem(term)
    if problem:
        raise UsageError(f"-k {text!r}: {problem}")
    return Keyword(" ".join(term.split()), value)


def _ranked_json(r: Ranked) -> dict[str, Any]:
    return {
        "rank": r.rank, "title": r.paper.title, "score": r.score,
        "matches": [{"term": m.term, "weight": m.weight, "title": m.title_hits,
                     "abstract": m.abstract_hits, "contribution": round(m.contribution, 4)}
                    for m in r.matches],
        "key": r.paper.key, "source": r.paper.source, "line": r.paper.line,
        "similar": list(r.similar), "learned": r.learned,
    }


def _interest(text: str) -> str:
    """``--interest``: white space collapsed, bounded, printable, with some words."""
    from .config import MAX_INTEREST  # the bound of [subscribers].interest

    found = " ".join(text.split())
    if len(found) > MAX_INTEREST:
        raise UsageError(f"--interest: at most {MAX_INTEREST} characters, got {len(found)}")
    if not found.isprintable():
        raise UsageError("--interest: remove the control characters from the text")
    if not re.search(r"\w", found):
        raise UsageError(f"--interest {text!r}: say what you want to read in words")
    return found


def _rank_profile(config: Any, subscriber: str | None, keywords: tuple[str, ...],
                  excludes: tuple[str, ...], interest: str | None) -> Profile:
    from .models import Profile

    text = _interest(interest) if interest is not None else None
    if config is None:
        if not keywords and text is None:
            raise UsageError("give keywords with -k TERM (repeatable), --interest TEXT, or "
                             "--config PATH")
        return Profile("cli", keywords=tuple(_keyword(k) for k in keywords),
                       exclude=tuple(_keyword(x) for x in excludes), interest=text or "")
    if subscriber is None:
        if len(config.subscribers) != 1:
            names = ", ".join(p.name for p in config.subscribers) or "none"
            raise UsageError(f"choose a subscriber with --subscriber (have: {names})")
        profile: Profile = config.subscribers[0]
    else:
        profile = config.subscriber(subscriber)
    if excludes:  # -x adds to the subscriber's own excludes
        profile = replace(profile, exclude=profile.exclude + tuple(map(_keyword, excludes)))
    if text is not None:  # --interest replaces the subscriber's own, for this command
        profile = replace(profile, interest=text)
    return profile


@cli.command("rank")
@click.argument("dumps", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_path", metavar="PATH",
              help="Take keywords, interest and votes from this config (and its store).")
@click.option("--subscriber", metavar="NAME",
              help="Whose keywords, interest and votes (with --config).")
@click.option("-k", "--keyword", "keywords", multiple=True, metavar="TERM[^WEIGHT]",
              help="A keyword or phrase of interest; repeat for more.")
@click.option("-x", "--exclude", "excludes", multiple=True, metavar="TERM",
              help="Drop papers matching this; repeat for more.")
@click.option("--interest", metavar="TEXT",
              help="A sentence about what you want to read (replaces the subscriber's).")
@click.option("--no-semantic", is_flag=True, help="Rank without the embedding model.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, best first.")
@_DATE_OPTION
def rank_cmd(dumps: tuple[Path, ...], config_path: str | None, subscriber: str | None,
             keywords: tuple[str, ...], excludes: tuple[str, ...], interest: str | None,
             no_semantic: bool, as_json: bool, today: Any) -> None:
    """Rank the papers in dumps by keywords, interest and votes; no store is changed.

    \b
    Example:
      digest rank dump.txt -k CLIP -k "data curation^2" -x survey
    """
    from . import feedback
    from .config import RankingConfig
    from .pipeline import build_corpus, semantic_for
    from .rank import ranking, stems_of

    if keywords and (config_path or subscriber):
        raise UsageError("give either -k keywords or --config/--subscriber, not both")
    config = _config(config_path) if config_path or subscriber else None
    profile = _rank_profile(config, subscriber, keywords, excludes, interest)
    votes = feedback.votes(config, profile.name) if config is not None else []
    parsed, errors = _parse_all(dumps, today.date() if today else None)
    seen: dict[str, Paper] = {}
    for d in parsed:
        for p in d.papers:
            seen.setdefault(p.key, p)
    is_judged = feedback.judged(votes)
    papers = [p for p in seen.values() if not is_judged(p)]  # a judged paper is not new
    semantic = semantic_for(config.ranking if config is not None else RankingConfig(),
                            lambda line: click.echo(f"digest: {line}", err=True),
                            enabled=not no_semantic)
    try:
        matrix = semantic.paper_vectors(papers) if semantic else None
        queries = semantic.query_vectors([profile]) if semantic else None
        corpus = build_corpus(papers, stems_of([profile]), vectors=matrix)
        results = ranking(corpus, profile, votes, queries)
    finally:
        if semantic:
            semantic.close()
    if as_json:  # one entry per line: the C encoder, not indent's pure-Python one
        click.echo("[\n" + ",\n".join(json.dumps(_ranked_json(r), ensure_ascii=False)
                                       for r in results) + "\n]" if results else "[]")
    else:
        from .render import explain, learned_note

        left_out = len(seen) - len(papers)
        click.echo(f"{len(results)} of {len(papers)} papers match"
                   + (f" ({left_out} you already judged left out)" if left_out else ""))
        for r in results:
            lines = [line for line in (explain(r), learned_note(r)) if line] or [""]
            click.echo(f"{r.rank:>4}. {r.score:7.2f}  {r.paper.title}")
            for line in lines:
                click.echo(f"{'':15}{line}")
    _fail_inputs(errors)


def _vote_json(v: Vote) -> dict[str, Any]:
    return {"key": v.paper.key, "title": v.paper.title, "vote": "like" if v.like else "dislike",
            "when": v.at.astimezone(UTC).isoformat(timespec="seconds") if v.at else None}


def _vote_line(v: Vote) -> str:
    when = f"{v.at.astimezone(UTC):%Y-%m-%d}" if v.at else "?"
    return f"{'+' if v.like else '-'} {'like' if v.like else 'dislike':<8} {when}  " \
           f"{v.paper.key}  {v.paper.title}"


@cli.command("feedback")
@click.argument("subscriber")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--like", "likes", multiple=True, metavar="KEY",
              help="A paper the reader wants more like (its key); repeat for more.")
@click.option("--dislike", "dislikes", multiple=True, metavar="KEY",
              help="A paper the reader wants less like; repeat for more.")
@click.option("--list", "show", is_flag=True, help="Show the votes recorded, newest first.")
@click.option("--undo", "undos", multiple=True, metavar="KEY",
              help="Forget the vote on this paper; repeat for more.")
@click.option("--reset", is_flag=True, help="Forget every vote of this subscriber.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the votes, or a count).")
def feedback_cmd(subscriber: str, config_path: str | None, likes: tuple[str, ...],
                 dislikes: tuple[str, ...], show: bool, undos: tuple[str, ...], reset: bool,
                 as_json: bool) -> None:
    """Record a subscriber's likes and dislikes of papers (by key): they steer the ranking.

    Keys come from `digest rank --json` or `digest parse --json`; the paper must have
    been ingested. A judged paper is never offered as new again.

    \b
    Example:
      digest feedback ana --like 2411.01234 --dislike 2411.05678
    """
    from . import feedback

    chosen = [name for name, on in (("--list", show), ("--undo", undos), ("--reset", reset))
              if on]
    if len(chosen) > 1:
        raise UsageError(f"give one of {', '.join(chosen)}, not more")
    if chosen and (likes or dislikes):
        raise UsageError(f"{chosen[0]} cannot go with --like/--dislike; record votes in a "
                         "command of their own")
    if not (chosen or likes or dislikes):
        raise UsageError("give --like KEY or --dislike KEY (repeatable), --list, --undo KEY, "
                         "or --reset")
    config = _config(config_path)
    if reset or undos:
        n = feedback.reset(config, subscriber) if reset else feedback.undo(config, subscriber,
                                                                              undos)
        if as_json:
            click.echo(json.dumps({"subscriber": subscriber, "forgotten": n}))
        else:
            click.echo(f"{subscriber}: forgot {n} vote(s)")
        return
    votes = (feedback.votes(config, subscriber) if show
             else feedback.record(config, subscriber, likes, dislikes))
    if as_json:
        click.echo(json.dumps([_vote_json(v) for v in votes], indent=2, ensure_ascii=False))
        return
    if show and not votes:
        click.echo(f"{subscriber}: no votes recorded")
    for v in votes:
        click.echo(_vote_line(v))


@cli.command("ingest")
@click.argument("dumps", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ingest_cmd(dumps: tuple[Path, ...], config_path: str | None, as_json: bool) -> None:
    """Add dumps to the store as already seen (backfill): they appear in no digest.

    \b
    Example:
      digest ingest old-dumps/*.txt
    """
    from .pipeline import backfill

    report = backfill(_config(config_path), dumps, report=_live_report())
    if as_json:
        click.echo(json.dumps(_report_dict(report), indent=2))
    else:
        _print_ingest(report)
        click.echo(f"{report.new_papers} new papers; the store now holds "
                   f"{report.total_papers}.")
    _finish(report)


@cli.command("send")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--dry-run", is_flag=True,
              help="Write pending messages as .eml files under <data_dir>/outbox; send nothing.")
@click.option("--retry-failed", is_flag=True,
              help="First put failed messages back in the queue (same Message-ID), then send.")
@click.option("--subscriber", metavar="NAME",
              help="With --retry-failed: only this subscriber's failed messages.")
@click.option("--workers", metavar="N", type=click.IntRange(1, 64), default=1,
              show_default=True,
              help="Send over N SMTP connections at once. Each message goes out once, and "
                   "[smtp].max_per_minute holds for all of them together.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def send_cmd(config_path: str | None, dry_run: bool, retry_failed: bool, subscriber: str | None,
             workers: int, as_json: bool) -> None:
    """Deliver every pending e-mail now (retries included, whatever their back-off).

    Exits 3 when some e-mail could not be delivered (failed, or left to retry), as
    `digest run` does.

    Several senders may work on one outbox at once (--workers, more `digest send`
    processes, other hosts sharing a PostgreSQL store): each takes a few messages at a
    time for 10 minutes, so none sends what another holds, and the messages of one that
    died go out once that time has passed.

    \b
    Example:
      digest send --retry-failed --subscriber ana
      digest send --workers 4 --json
    """
    from .pipeline import send_pending

    if subscriber is not None and not retry_failed:
        raise UsageError("--subscriber goes with --retry-failed (send delivers all pending "
                         "mail)")
    if retry_failed and dry_run:
        raise UsageError("--retry-failed changes the queue; it cannot go with --dry-run")
    if workers > 1 and dry_run:
        raise UsageError("--workers is for sending; --dry-run sends nothing")
    config = _config(config_path)
    requeue = _requeue_failed(config, subscriber) if retry_failed else None
    progress = _progress()
    try:
        report, written = send_pending(config, dry_run=dry_run, progress=progress,
                                       workers=workers)
    finally:
        progress.end()
    if dry_run:
        if as_json:
            click.echo(json.dumps({"written": [str(p) for p in written]}, indent=2))
        else:
            for path in written:
                click.echo(f"wrote {_shown(str(path))}")
            click.echo(f"{len(written)} pending message(s) written; nothing sent or marked")
        return
    if as_json:
        out = _delivery_dict(report) or {}
        if requeue is not None:
            out = {"requeued": len(requeue.requeued),
                   "not_requeued": [{"subscriber": d.subscriber, "issue": d.issue,
                                     "message_id": d.message_id, "reason": why}
                                    for d, why in requeue.kept], **out}
        click.echo(json.dumps(out, indent=2))
    else:
        if requeue is not None:
            _print_requeue(requeue, subscriber)
        _print_delivery(report)
    if _undelivered(report):
        raise SystemExit(EXIT_UNDELIVERED)


def _mail_addresses(config: Any) -> dict[str, str]:
    """Subscriber name -> address, for those the config still e-mails."""
    return {p.name: p.email for p in config.subscribers if p.email and p.mail}


def _requeue_failed(config: Any, subscriber: str | None) -> Any:
    """``send --retry-failed``: failed messages back to pending, under the send lock."""
    from .lock import exclusive
    from .send import requeue_failed
    from .store import open_store

    if config.smtp is None:
        raise ConfigError(str(config.path), ["[smtp]: missing: add an [smtp] table to send "
                                             "e-mail (see README, E-mail)"])
    config.smtp.password()  # missing: an error before anything is requeued
    with exclusive(config.data_dir, "send"):
        store = open_store(config)
        try:
            report = requeue_failed(store, lambda: datetime.now(UTC), _mail_addresses(config),
                                    subscriber=subscriber)
        finally:
            store.close()
    if (subscriber is not None and not report.requeued and not report.kept
            and subscriber not in {p.name for p in config.subscribers}):
        raise UsageError(f"no subscriber named {subscriber!r} in {config.path} or in the "
                         "outbox")
    return report


def _print_requeue(requeue: Any, subscriber: str | None) -> None:
    if requeue.requeued:
        click.echo(f"requeued {len(requeue.requeued)} failed message(s), same Message-ID: "
                   + ", ".join(f"{d.subscriber} issue {d.issue}" for d in requeue.requeued))
    elif not requeue.kept:
        click.echo("no failed messages to send again"
                   + (f" for {subscriber}" if subscriber else ""))
    for d, why in requeue.kept:
        click.echo(f"not requeued: {d.subscriber} issue {d.issue}: {why}")


@cli.command("status")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_cmd(config_path: str | None, as_json: bool) -> None:
    """Subscribers, their last digest, and e-mail waiting or failed.

    \b
    Example:
      digest status --json
    """
    from .send import why_not_requeued
    from .store import snapshot_store

    config = _config(config_path)
    store = snapshot_store(config)
    try:
        known = {name: (issue, at, unsub) for name, issue, at, unsub in store.subscriber_rows()}
        deliveries = store.deliveries(("pending", "failed"))
    finally:
        store.close()
    subs = []
    for p in config.subscribers:
        issue, at, unsub = known.get(p.name, (0, None, None))
        mail = ("unsubscribed" if unsub else "on" if p.email and p.mail and config.smtp
                else "off")
        subs.append({"name": p.name, "email": p.email, "mail": mail, "last_issue": issue,
                     "last_digest_at": at, "unsubscribed_at": unsub})
    unsubscribed = {name for name, (_, _, unsub) in known.items() if unsub}
    addresses = _mail_addresses(config)

    def when(value: datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value else None

    rows = []
    for d in deliveries:
        kept = (why_not_requeued(d, unsubscribed, addresses) if d.status == "failed"
                else None)
        retry = (f"digest send --retry-failed --subscriber {d.subscriber}"
                 if d.status == "failed" and kept is None else None)
        rows.append({"subscriber": d.subscriber, "issue": d.issue, "status": d.status,
                     "recipient": d.recipient, "message_id": d.message_id,
                     "attempts": d.attempts, "last_error": d.last_error,
                     "next_attempt_at": when(d.next_attempt_at),
                     "unconfirmed_tries": d.uncertain,
                     "unconfirmed_since": when(d.uncertain_since),
                     "failed_at": when(d.failed_at),
                     "retry_command": retry, "not_retryable": kept})
    if as_json:
        click.echo(json.dumps({"subscribers": subs, "deliveries": rows}, indent=2))
        return
    click.echo("subscribers:")
    for s in subs:
        last = f"issue {s['last_issue']} at {s['last_digest_at']}" if s["last_issue"] else \
            "no digest yet"
        click.echo(f"  {s['name']:<16} {s['email'] or '-':<28} mail {s['mail']:<13} {last}")
    pending = sum(1 for r in rows if r["status"] == "pending")
    click.echo(f"e-mail: {pending} pending, {len(rows) - pending} failed")
    for r in rows:
        extra = ""
        if r["status"] == "pending":
            if r["unconfirmed_tries"]:
                extra += (f", {r['unconfirmed_tries']} unconfirmed since "
                          f"{r['unconfirmed_since'] or '?'}")
            extra += f", next try {r['next_attempt_at']}"
        click.echo(f"  {r['status']:<8} {r['subscriber']} issue {r['issue']} to {r['recipient']}"
                   f" ({r['attempts']} attempt(s){extra}): {r['last_error'] or '-'}")
        if r["status"] == "failed":
            since = f"failed at {r['failed_at']}; " if r["failed_at"] else ""
            then = (f"send it again: {r['retry_command']}" if r["retry_command"]
                    else f"not sent again: {r['not_retryable']}")
            click.echo(f"{'':11}{since}{then}")
    if any(r["retry_command"] for r in rows):
        click.echo("to send failed mail again (same Message-ID): "
                   "digest send --retry-failed [--subscriber NAME]")


def _log_line(line: str) -> None:
    click.echo(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} digest: {line}", err=True)


@cli.command("daemon")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--once", is_flag=True, help="Run every due job once and exit (cron, timers).")
@click.option("--wait", is_flag=True, help="Wait for a running daemon to stop, then start.")
@click.option("--workers", metavar="N", type=click.IntRange(1, 64), default=1,
              show_default=True, help="Make each tick's digests in N processes at once.")
def daemon_cmd(config_path: str | None, once: bool, wait: bool, workers: int) -> None:
    """Poll the sources and publish each digest on its cadence, until stopped.

    With --once: exits 1 when the tick failed, 3 when e-mail that was due could not be
    delivered (it stays queued for the next tick).

    \b
    Example:
      digest daemon --once --wait --config /srv/digest/config.toml
    """
    import signal
    import threading

    from .daemon import Daemon

    config = _config(config_path)
    if config.smtp is not None:
        config.smtp.password()  # missing: an error now, not at the first due digest
    stop = threading.Event()
    daemon = Daemon(config, log=_log_line, workers=workers)

    def on_signal(signum: int, _frame: object) -> None:
        if not daemon.started:  # still waiting for the lock: nothing to finish
            _log_line(f"{signal.Signals(signum).name}: stopped before starting")
            raise SystemExit(0)
        _log_line(f"{signal.Signals(signum).name}: finishing the current step, then exiting")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not daemon.serve(stop, once=once, wait=wait):
        raise SystemExit(1)  # --once: the tick failed (see the log lines above)
    if once and daemon.last is not None and daemon.last.undelivered:
        _log_line("e-mail that was due could not be delivered (see `digest status`; exit 3)")
        raise SystemExit(EXIT_UNDELIVERED)


@cli.command("unsubscribe")
@click.argument("email")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def unsubscribe_cmd(email: str, config_path: str | None) -> None:
    """Stop e-mail to EMAIL (their history, feed and digests stay).

    \b
    Example:
      digest unsubscribe ana@example.org
    """
    from .subscriptions import set_mail_by_email

    names = set_mail_by_email(_config(config_path), email, stop=True)
    click.echo(f"{', '.join(names)} <{email}>: unsubscribed, no more e-mail (pending mail "
               "cancelled)")


@cli.command("subscribe")
@click.argument("email")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def subscribe_cmd(email: str, config_path: str | None) -> None:
    """Resume e-mail to EMAIL, a subscriber in the config who had unsubscribed.

    \b
    Example:
      digest subscribe ana@example.org
    """
    from .subscriptions import set_mail_by_email

    names = set_mail_by_email(_config(config_path), email, stop=False)
    click.echo(f"{', '.join(names)} <{email}>: e-mail again from the next digest")


@cli.command("build-site")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def build_site_cmd(config_path: str | None, as_json: bool) -> None:
    """Build the site alone (index, archives, issue pages), e.g. for static hosting.

    `digest run` builds it too; this rebuilds every page (after a template change, say).
    Only files whose content changed are written.

    \b
    Example:
      digest build-site && rsync -a site/ feeds host:/var/www/papers/
    """
    from .site import build

    report = build(_config(config_path))
    if as_json:
        click.echo(json.dumps({"site": str(report.folder), "written": report.written,
                               "unchanged": report.unchanged}, indent=2))
        return
    click.echo(f"site {_shown(str(report.folder))}: {len(report.written)} page(s) written, "
               f"{report.unchanged} unchanged")


@cli.group("store")
def store_group() -> None:
    """The store itself: move it from SQLite to PostgreSQL.

    \b
    Example:
      digest store copy --to postgresql://digest@db.example.org/digest
    """


@store_group.command("copy")
@click.option("--to", "url", required=True, metavar="URL",
              help="An empty PostgreSQL database: postgresql://user@host/db (the password "
                   "from PGPASSWORD or ~/.pgpass).")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def store_copy_cmd(url: str, config_path: str | None, as_json: bool) -> None:
    """Copy the config's SQLite store into an empty PostgreSQL database.

    Every table is copied in one transaction and its row count checked; the SQLite file
    is not changed. Feed ids and Message-IDs stay the same. Then set [store] url.

    \b
    Example:
      digest store copy --to postgresql://digest@db.example.org/digest
    """
    from .lock import exclusive
    from .storecopy import copy_store

    config = _config(config_path)
    if config.store_url:
        raise UsageError("this config already uses PostgreSQL ([store] url or "
                         "$DIGEST_STORE_URL); copy from a config that uses the SQLite store")
    with exclusive(config.data_dir, "store copy"):  # no run writes the file meanwhile
        report = copy_store(config.store_path, url,
                            progress=None if as_json else lambda line: click.echo(line,
                                                                                  err=True))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    for line in report.lines():
        click.echo(line)
    click.echo("next: add [store] url to the config (or export DIGEST_STORE_URL)")


@cli.command("serve")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Requests handled at once.")
@click.option("--trusted-proxy", metavar="ADDR",
              help="A reverse proxy whose X-Forwarded-For/-Proto headers are believed.")
def serve_cmd(config_path: str | None, host: str, port: int, threads: int,
              trusted_proxy: str | None) -> None:
    """Serve the site, the feeds, one-click unsubscribe and the 👍/👎 links.

    Runs on waitress (a production WSGI server); put a TLS reverse proxy in front.
    Access log lines go to stderr. Stop with Ctrl-C or SIGTERM.

    \b
    Example:
      digest serve --port 8000 --trusted-proxy 127.0.0.1
    """
    from .web import serve

    serve(_config(config_path), host=host, port=port, threads=threads,
          trusted_proxy=trusted_proxy, log=lambda line: click.echo(line, err=True))


@cli.command("init")
@click.argument("folder", default=".", type=click.Path(path_type=Path))
def init_cmd(folder: Path) -> None:
    """Start a digest in FOLDER (default: here): a commented config.toml and a sample inbox.

    Refuses (exit 2) when FOLDER already has a config.toml.

    \b
    Example:
      digest init my-digest
    """
    from .init import init

    made = init(folder)
    click.echo(f"wrote {_shown(str(made.config))} (one subscriber, {made.subscriber!r}; every "
               "line explained)")
    click.echo(f"wrote {_shown(str(made.sample))} ({made.papers} sample papers)")
    click.echo("next:")
    if made.folder.resolve() != Path.cwd().resolve():
        import shlex

        click.echo(f"  cd {shlex.quote(_shown(str(made.folder)))}")
    click.echo("  digest run        # ingest the sample, write the first digest, feed and site")
    click.echo("  digest serve      # then open http://127.0.0.1:8000/")
    click.echo("  digest preview    # the next digest, as it would be now (after new dumps)")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: one line on stderr per error, no traceback unless --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # accepted before or after the command
    try:
        cli.main(args=args, prog_name="digest", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("digest: aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    except DigestError as exc:
        if debug:
            raise
        click.echo(f"digest: error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:
        if debug:
            raise
        click.echo(f"digest: internal error: {type(exc).__name__}: {exc} "
                   "(run with --debug for the traceback, and please report it)", err=True)
        return 1
    return 0


__all__ = ["ConfigError", "cli", "main"]
