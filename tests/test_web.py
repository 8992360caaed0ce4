"""`digest serve`: the site and feeds over HTTP (conditional, gzipped, never a private file),
one-click unsubscribe, 👍/👎 votes and the feedback page, abuse limits and the access log.

Most tests run the real server (``tests/serving.py``: a subprocess on waitress) over data a
real pipeline run produced; a few check the pure pieces of ``digest.web`` directly.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import replace
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import Clock, Project
from serving import Served, serving

from digest import subscriptions, tokens, web
from digest.cli import main
from digest.links import WebLinks
from digest.pipeline import run
from digest.render import Renderer
from digest.store import Store

SITE = "https://digest.example.org/"
SUBSCRIBERS = """
[[subscribers]]
name = "ana"
email = "ana@example.org"
keywords = ["learning"]
max_items = 30

[[subscribers]]
name = "bob"
email = "bob@example.org"
keywords = ["robot"]
"""
SMTP = ('[smtp]\nhost = "127.0.0.1"\nport = 2525\nsecurity = "none"\n'
        'from = "digest@example.org"\n')
EXTRA = "also_new = 1000\n" + SMTP + "[ranking]\nsemantic = false\n"

PAPERS = {
    "robot": [
        ("Tactile Grasping for Robot Arms", "A robot arm is taught to grasp unseen objects "
         "from tactile sensors and joint torque feedback during manipulation."),
        ("Dexterous In-Hand Rotation with Tactile Sensors", "A robot hand rotates objects "
         "using tactile sensors and joint torque feedback, trained in simulation."),
        ("Robot Assembly from Human Demonstration", "A robot arm assembles parts; tactile "
         "feedback and joint torque correct its grasp during manipulation."),
        ("Legged Locomotion over Rough Terrain", "Quadruped robot locomotion policies "
         "transfer from simulation to rough terrain with joint torque control."),
    ],
    "medical": [
        ("Chest X-ray Report Generation", "Radiology reports are generated from chest X-ray "
         "images; clinicians rate the findings for patients."),
        ("Tumour Segmentation in MRI Scans", "Brain tumour segmentation on MRI scans of "
         "patients, validated by radiologists across hospitals."),
        ("Pathology Slide Classification", "Whole-slide pathology images of biopsies are "
         "classified for cancer grading by pathologists."),
        ("Retinal Imaging for Diabetic Screening", "Fundus photographs of patients screen "
         "for diabetic retinopathy in clinics."),
    ],
    "language": [
        ("Tool Use for Language Model Agents", "Language model agents call tools and APIs "
         "and plan multi-step tasks."),
        ("Long-Context Retrieval for Question Answering", "A language model answers "
         "questions over long documents with retrieval."),
        ("Reasoning Chains in Small Language Models", "Small language models write "
         "step-by-step reasoning for maths word problems."),
        ("Tokenizer Choices for Language Models", "How tokenizer vocabulary size changes "
         "language model perplexity in many languages."),
    ],
}
GRASP = "Tactile Grasping for Robot Arms"
HOSTILE = 'Robots <script>document.body.dataset.pwned = 1</script> & "Friends"'
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
COMBINED = re.compile(r'^(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
                      r'"((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" '
                      r'"((?:[^"\\]|\\.)*)"$')


def items() -> list[tuple[str, str, str]]:
    """(arXiv id, title, abstract) of every sample paper; each abstract says "learning"."""
    out = []
    for t, papers in enumerate(PAPERS.values()):
        for n, (title, abstract) in enumerate(papers):
            out.append((f"2612.{t}{n:04d}", title,
                        f"{abstract} Learning takes {3 * t + n + 2} hours."))
    return out


def key_of(title: str) -> str:
    return next(f"arxiv:{aid}" for aid, t, _ in items() if t == title)


def write_dump(path: Path, hostile: bool = False) -> Path:
    rows: list[dict[str, Any]] = [
        {"paper": {"id": aid, "title": title, "summary": abstract,
                   "authors": [{"name": "A. Author"}], "upvotes": 10,
                   "publishedAt": "2026-12-01T10:00:00.000Z"}} for aid, title, abstract in items()]
    if hostile:
        rows.append({"paper": {"id": "2612.09999", "title": HOSTILE,
                               "summary": "A robot paper about learning with a hostile title.",
                               "publishedAt": "2026-12-01T10:00:00.000Z"}})
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def deploy(project: Project, clock: Clock, site_url: str = SITE,
           feeds_dir: str = "feeds") -> Project:
    """The project after one real run (mail queued, not sent): store, feeds, site, secret."""
    project.write_config(SUBSCRIBERS, extra=EXTRA)
    text = project.config_path.read_text(encoding="utf-8").replace(SITE, site_url)
    text = text.replace('feeds_dir = "feeds"', f'feeds_dir = "{feeds_dir}"')
    project.config_path.write_text(text, encoding="utf-8")
    write_dump(project.inbox / "papers.json", hostile=True)
    run(project.config(), now=clock, send=False)
    clock.tick()
    return project


@pytest.fixture
def deployed(project: Project, clock: Clock) -> Project:
    return deploy(project, clock)


@pytest.fixture
def served(deployed: Project) -> Iterator[Served]:
    with serving(deployed.config_path) as s:
        yield s
    assert s.process.returncode == 0 and "digest: stopped" in s.log()


def get(served: Served, target: str | bytes, method: str = "GET",
        headers: Mapping[str, str | bytes] | None = None, content: Any = None,
        data: dict[str, str] | None = None, files: dict[str, Any] | None = None
        ) -> httpx.Response:
    """One request with ``target`` sent exactly as given (no URL normalisation); no gzip
    unless ``headers`` ask for it."""
    raw = target if isinstance(target, bytes) else target.encode("latin-1")
    with httpx.Client(timeout=30) as client:
        wanted = {"Accept-Encoding": "identity", **(headers or {})}
        raw_headers = [(k.encode(), v if isinstance(v, bytes) else v.encode("latin-1"))
                       for k, v in wanted.items()]
        request = client.build_request(method, served.origin + "/", headers=raw_headers,
                                       content=content, data=data, files=files,
                                       extensions={"target": raw})
        return client.send(request)


def raw_socket(served: Served, request_line: bytes) -> tuple[int, bytes]:
    """Status and body of a request written byte by byte over a plain socket."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def local(url: str) -> str:
    """A URL under site_url as a request target of the local server."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def mail_of(capsys: pytest.CaptureFixture[str], project: Project, name: str) -> str:
    """What `digest status --json` says of a subscriber's e-mail."""
    code, out, err = cli(capsys, "status", "--config", str(project.config_path), "--json")
    assert code == 0, err
    return str(next(s["mail"] for s in json.loads(out)["subscribers"] if s["name"] == name))


def votes_of(capsys: pytest.CaptureFixture[str], project: Project,
             name: str) -> list[tuple[str, str]]:
    """(key, vote) from `digest feedback NAME --list --json`."""
    code, out, err = cli(capsys, "feedback", "--config", str(project.config_path), name,
                         "--list", "--json")
    assert code == 0, err
    return [(r["key"], r["vote"]) for r in json.loads(out)]


def secret_of(project: Project) -> bytes:
    secret = tokens.load_secret(project.config().data_dir, create=False)
    assert secret is not None
    return secret


def links_of(project: Project, name: str) -> WebLinks:
    return WebLinks(SITE, secret_of(project), name)


def mailed_unsubscribe(project: Project, name: str) -> str:
    """The https URL of the List-Unsubscribe header of the subscriber's queued e-mail."""
    store = Store.read_only(project.config().store_path)
    assert store is not None
    try:
        (delivery,) = [d for d in store.deliveries(("pending",)) if d.subscriber == name]
    finally:
        store.close()
    message = message_from_bytes(delivery.raw, policy=policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (url,) = [u for u in re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
              if u.startswith("https://")]
    return str(url)


def form_action(html: str) -> str:
    """The action of the page's only form, unescaped."""
    (action,) = re.findall(r'<form method="post" action="([^"]*)">', html)
    return str(action).replace("&amp;", "&")


# --- static files --------------------------------------------------------------------------

def test_a_feed_is_revalidated_by_etag_and_by_date(served: Served, deployed: Project) -> None:
    feed = deployed.config().feeds_dir / "ana.atom"
    first = get(served, "/feeds/ana.atom")
    assert first.status_code == 200 and first.content == feed.read_bytes()
    assert first.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert first.headers["cache-control"] == "no-cache"
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert modified.endswith(" GMT")
    for match in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = get(served, "/feeds/ana.atom", headers={"If-None-Match": match})
        assert again.status_code == 304, match
        assert again.content == b"" and again.headers["etag"] == etag
    assert get(served, "/feeds/ana.atom", headers={"If-None-Match": '"nope"'}).status_code == 200
    by_date = get(served, "/feeds/ana.atom", headers={"If-Modified-Since": modified})
    assert by_date.status_code == 304 and by_date.headers["etag"] == etag
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert get(served, "/feeds/ana.atom", headers={"If-Modified-Since": old}).status_code == 200
    assert get(served, "/feeds/ana.atom", headers={"If-Modified-Since": "garbage"}
               ).status_code == 200
    # If-None-Match wins over If-Modified-Since.
    assert get(served, "/feeds/ana.atom", headers={"If-None-Match": '"nope"',
                                                   "If-Modified-Since": modified}
               ).status_code == 200
    head = get(served, "/feeds/ana.atom", method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(feed.read_bytes()))
    feed.write_bytes(feed.read_bytes().replace(b"</feed>", b"<!-- new --></feed>"))
    changed = get(served, "/feeds/ana.atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_pages_and_the_stylesheet_have_their_types(served: Served, deployed: Project) -> None:
    site = deployed.config().site
    index = get(served, "/")
    assert index.status_code == 200 and index.content == (site / "index.html").read_bytes()
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    css = get(served, "/site.css")
    assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    assert css.content == (site / "site.css").read_bytes()
    archive = get(served, "/ana/")
    assert archive.content == (site / "ana" / "index.html").read_bytes()
    (issue,) = sorted((site / "ana").glob("0001-*.html"))
    page = get(served, f"/ana/{issue.name}")
    assert page.status_code == 200 and page.content == issue.read_bytes()
    moved = get(served, "/ana")
    assert moved.status_code == 301 and moved.headers["location"] == "/ana/"
    assert get(served, "/nope.html").status_code == 404
    assert get(served, "/feeds/zed.atom").status_code == 404


def test_gzip_when_asked_with_its_own_etag(served: Served, deployed: Project) -> None:
    feed = (deployed.config().feeds_dir / "ana.atom").read_bytes()
    plain = get(served, "/feeds/ana.atom")
    with httpx.Client(timeout=30) as client, client.stream(
            "GET", served.origin + "/feeds/ana.atom",
            headers={"Accept-Encoding": "br;q=1, gzip;q=0.5"}) as zipped:
        body = b"".join(zipped.iter_raw())
        headers = zipped.headers
    assert headers["content-encoding"] == "gzip" and headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == feed and len(body) < len(feed)
    assert headers["etag"] != plain.headers["etag"]
    assert plain.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in get(served, "/feeds/ana.atom",
                                         headers={"Accept-Encoding": "identity"}).headers
    refused = get(served, "/feeds/ana.atom", headers={"Accept-Encoding": "gzip;q=0, *;q=1"})
    assert "content-encoding" not in refused.headers and refused.content == feed
    assert get(served, "/", headers={"Accept-Encoding": "*"}
               ).headers.get("content-encoding") == "gzip"
    same = get(served, "/feeds/ana.atom", headers={"Accept-Encoding": "gzip",
                                                   "If-None-Match": headers["etag"]})
    assert same.status_code == 304 and same.headers["etag"] == headers["etag"]


@pytest.fixture
def traps(deployed: Project) -> Project:
    """Things in and around the site that must never be served."""
    config = deployed.config()
    site = config.site
    (site / ".digest-tmp").mkdir(exist_ok=True)
    (site / ".digest-tmp" / "x").write_text("TEMPFILE", encoding="utf-8")
    (site / ".digest-tmp" / "x.html").write_text("TEMPFILE", encoding="utf-8")
    (site / "notes.txt").write_text("NOTES", encoding="utf-8")
    (site / "leak.html").symlink_to(config.path)
    (site / "secret.css").symlink_to(config.data_dir / "secret")
    (site / "store.html").symlink_to(config.store_path)
    (site / "alias.html").symlink_to(site / "notes.txt")
    (site / "data").symlink_to(config.data_dir, target_is_directory=True)
    (site / "again.html").symlink_to(site / "index.html")  # inside the site: fine
    return deployed


TRAVERSALS = [
    b"/../config.toml", b"/%2e%2e/config.toml", b"/..%2fconfig.toml", b"/%2e%2e%2fconfig.toml",
    b"/%252e%252e/config.toml", b"/.%2e/config.toml", b"/ana/../../config.toml",
    b"/feeds/../config.toml", b"/ana/..%2f..%2fconfig.toml", b"/ana%5c..%5c..%5cconfig.toml",
    b"/data/secret", b"/data/digest.sqlite3", b"/data/digests/ana/", b"/config.toml",
    b"//config.toml", b"/.digest-tmp/x", b"/.digest-tmp/x.html", b"/notes.txt",
    b"/leak.html", b"/secret.css", b"/store.html", b"/alias.html", b"/./index.html",
    b"/ana//index.html", b"/index.html%00.txt", b"/%00", b"/ana/%0a", b"/.git/config",
    b"/%2e%2e/%2e%2e/etc/passwd", b"/site.css%3f", b"/feeds/..%2f..%2fconfig.toml",
]


@pytest.mark.parametrize("raw", [False, True], ids=["httpx", "socket"])
def test_no_path_reaches_a_private_file(traps: Project, raw: bool) -> None:
    config = traps.config()
    secrets_text = [config.path.read_bytes(), (config.data_dir / "secret").read_bytes(),
                    b"SQLite format", b"TEMPFILE", b"NOTES", str(traps.root).encode()]
    with serving(traps.config_path) as served:
        assert get(served, "/again.html").content == (config.site / "index.html").read_bytes()
        bodies = set()
        for target in TRAVERSALS:
            if raw:
                status, body = raw_socket(served, b"GET " + target + b" HTTP/1.1")
            else:
                response = get(served, target)
                status, body = response.status_code, response.content
            assert status == 404, target
            assert not any(s.strip()[:24] in body for s in secrets_text), target
            bodies.add(body)
        assert len(bodies) == 1  # the same small page whatever was asked
        assert len(next(iter(bodies))) < 400


def test_private_folders_stay_private_even_inside_the_site(deployed: Project) -> None:
    """Defence in depth: a data folder or config file inside the site is never served."""
    config = deployed.config()
    (config.site / "private").mkdir()
    (config.site / "private" / "x.css").write_text("hidden", encoding="utf-8")
    (config.site / "cfg.html").symlink_to(config.path)
    files = web.StaticFiles(replace(config, data_dir=config.site / "private",
                                    site_dir=config.site))
    assert files.find(["private", "x.css"]) is None
    assert files.find(["cfg.html"]) is None
    assert files.find(["private"]) is None  # not even a redirect into it
    found = files.find(["site.css"])
    assert isinstance(found, web.StaticFile) and found.ext == ".css"
    assert files.find(["ana"]) == "redirect"


@pytest.mark.parametrize(("path", "ok"), [
    ("/", True), ("/a/b.html", True), ("/a/", True), ("/a//b", False), ("/../x", False),
    ("/a/./b", False), ("/.hidden", False), ("/a\\b", False), ("/a%2e", False),
    ("/a\x00", False), ("/a\x7f", False), ("relative", False), ("/café.html", True),
    ("/a\x85", False), ("/a\x9f", False), ("/日本/", True),
])
def test_path_segments(path: str, ok: bool) -> None:
    assert (web.path_segments(path) is not None) == ok


@pytest.mark.parametrize(("header", "ok"), [
    ("gzip", True), ("GZIP;q=0.1", True), ("br, gzip;q=0", False), ("*", True),
    ("*;q=0", False), ("identity", False), ("", False), ("gzip;q=nan", False),
    ("x-gzip", True), ("gzip;q=0, *", False), ("deflate, *;q=0.2", True),
])
def test_accept_encoding(header: str, ok: bool) -> None:
    assert web.accepts_gzip(header) == ok


# --- one-click unsubscribe -----------------------------------------------------------------

def test_one_click_unsubscribe_from_the_mail_and_subscribe_again(
        served: Served, deployed: Project, capsys: pytest.CaptureFixture[str]) -> None:
    config = deployed.config()
    url = mailed_unsubscribe(deployed, "ana")
    assert url.startswith(SITE + "unsubscribe?")
    target = local(url)
    shown = get(served, target)
    assert shown.status_code == 200 and "ana" in shown.text
    assert 'name="List-Unsubscribe" value="One-Click"' in shown.text
    assert form_action(shown.text) == target and shown.text.count("<button") == 1
    assert not subscriptions.is_unsubscribed(config, "ana")  # looking changes nothing
    assert mail_of(capsys, deployed, "ana") == "on"

    done = get(served, target, method="POST", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "no more e-mail" in done.text
    assert "set-cookie" not in done.headers and "location" not in done.headers
    assert mail_of(capsys, deployed, "ana") == "unsubscribed"
    assert mail_of(capsys, deployed, "bob") == "on"
    again = get(served, target, method="POST", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and mail_of(capsys, deployed, "ana") == "unsubscribed"

    resubscribe = form_action(done.text)
    assert resubscribe == local(links_of(deployed, "ana").resubscribe)
    assert get(served, resubscribe).status_code == 200
    assert mail_of(capsys, deployed, "ana") == "unsubscribed"  # GET: still nothing changes
    back = get(served, resubscribe, method="POST")
    assert back.status_code == 200 and "again" in back.text
    assert mail_of(capsys, deployed, "ana") == "on"

    multipart = get(served, target, method="POST",
                    files={"List-Unsubscribe": (None, "One-Click")})
    assert multipart.status_code == 200
    assert mail_of(capsys, deployed, "ana") == "unsubscribed"


def test_unsubscribe_needs_the_one_click_body(served: Served, deployed: Project,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = local(mailed_unsubscribe(deployed, "ana"))
    for kwargs in ({}, {"data": {"List-Unsubscribe": "Yes"}},
                   {"content": b"List-Unsubscribe=One-Click",
                    "headers": {"Content-Type": "text/plain"}},
                   {"files": {"other": (None, "One-Click")}}):
        refused = get(served, target, method="POST", **kwargs)
        assert refused.status_code == 400, kwargs
    assert mail_of(capsys, deployed, "ana") == "on"


def test_bad_tokens_change_nothing(deployed: Project, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    target = local(mailed_unsubscribe(deployed, "ana"))
    token = parse_qs(urlsplit(target).query)["t"][0]
    forged = target.replace(token, token[:-1] + ("0" if token[-1] != "0" else "1"))
    bob_token = links_of(deployed, "bob").unsubscribe_token
    secret = secret_of(deployed)
    gone = WebLinks(SITE, secret, "zed").unsubscribe  # signed right, not a subscriber
    form = {"List-Unsubscribe": "One-Click"}
    addresses = (f"192.0.2.{n}" for n in range(100))  # each bad link from its own address
    with serving(deployed.config_path, "--trusted-proxy", "127.0.0.1") as served:
        for bad in (forged, f"/unsubscribe?u=ana&t={bob_token}", "/unsubscribe?u=ana",
                    "/unsubscribe?t=" + token, local(gone), target + "&t=" + token,
                    target.replace("u=ana", "u=bob"), "/resubscribe?u=ana&t=" + bob_token):
            for method in ("GET", "POST"):
                response = get(served, bad, method=method, data=form,
                               headers={"X-Forwarded-For": next(addresses)})
                assert response.status_code == 400, (bad, method)
                assert "not valid" in response.text or "malformed" in response.text
    with serving(deployed.config_path, env={"DIGEST_SECRET": "another-secret-" * 4}) as other:
        stale = get(other, target, method="POST", data=form)
        assert stale.status_code == 400
        assert "List-Unsubscribe" not in stale.text
    assert mail_of(capsys, deployed, "ana") == "on"
    assert mail_of(capsys, deployed, "bob") == "on"


def test_before_any_run_the_server_says_what_to_do(project: Project) -> None:
    project.write_config(SUBSCRIBERS, extra=EXTRA)
    with serving(project.config_path) as served:
        assert "run `digest run` or `digest build-site` first" in served.log()
        assert get(served, "/").status_code == 404
        refused = get(served, "/unsubscribe?u=ana&t=" + "0" * 40)
        assert refused.status_code == 400
        assert "no tokens have been issued yet" in refused.text
    assert not (project.root / "data").exists()  # serving creates nothing


# --- votes and the feedback page -----------------------------------------------------------

def test_a_vote_is_confirmed_then_recorded_replaced_and_undone(
        served: Served, deployed: Project, capsys: pytest.CaptureFixture[str]) -> None:
    links = links_of(deployed, "ana")
    like, dislike = local(links.vote(key_of(GRASP), True)), local(links.vote(key_of(GRASP),
                                                                             False))
    shown = get(served, like)
    assert shown.status_code == 200 and GRASP in shown.text
    assert "higher" in shown.text and shown.text.count("<button") == 1
    assert form_action(shown.text) == like
    assert votes_of(capsys, deployed, "ana") == []  # looking records nothing

    done = get(served, like, method="POST")
    assert done.status_code == 200
    assert "more papers like this from the next digest" in done.text
    assert local(links.feedback).replace("&", "&amp;") in done.text
    assert votes_of(capsys, deployed, "ana") == [(key_of(GRASP), "like")]
    assert get(served, like, method="POST").status_code == 200
    assert votes_of(capsys, deployed, "ana") == [(key_of(GRASP), "like")]  # still one vote
    assert votes_of(capsys, deployed, "bob") == []

    assert "lower" in get(served, dislike).text
    replaced = get(served, dislike, method="POST")
    assert "fewer papers like this from the next digest" in replaced.text
    assert votes_of(capsys, deployed, "ana") == [(key_of(GRASP), "dislike")]

    other = key_of("Chest X-ray Report Generation")
    get(served, local(links.vote(other, True)), method="POST")
    page = get(served, local(links.feedback))
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    listed = re.findall(r"<li>(.*?)</li>", page.text, re.S)
    assert [("Chest X-ray" in li, GRASP in li) for li in listed] == [(True, False),
                                                                    (False, True)]
    assert "👍" in listed[0] and "👎" in listed[1] and "2026-" in listed[1]
    assert listed[1].count('name="undo"') == 1 and f'value="{key_of(GRASP)}"' in listed[1]
    undone = get(served, local(links.feedback), method="POST", data={"undo": key_of(GRASP)})
    assert undone.status_code == 200 and f"Undone: 👎 {GRASP}" in undone.text
    assert votes_of(capsys, deployed, "ana") == [(other, "like")]
    assert len(re.findall(r"<li>", undone.text)) == 1
    again = get(served, local(links.feedback), method="POST", data={"undo": key_of(GRASP)})
    assert again.status_code == 200 and "already gone" in again.text
    assert get(served, local(links.feedback), method="POST").status_code == 400


def test_vote_links_are_checked(served: Served, deployed: Project,
                                capsys: pytest.CaptureFixture[str]) -> None:
    links = links_of(deployed, "ana")
    like = local(links.vote(key_of(GRASP), True))
    other = key_of("Chest X-ray Report Generation")
    bad = [like.replace("v=like", "v=dislike"),  # the token of a like cannot dislike
           like.replace(key_of(GRASP).replace(":", "%3A"), other.replace(":", "%3A")),
           like.replace("u=ana", "u=bob"), like.replace("v=like", "v=meh"),
           local(links.feedback).replace("feedback", "vote")]
    for target in bad:
        assert get(served, target, method="POST").status_code == 400, target
    unknown = get(served, local(links.vote("arxiv:2699.99999", True)), method="POST")
    assert unknown.status_code == 404 and "not in the digest" in unknown.text
    assert votes_of(capsys, deployed, "ana") == []
    hostile = get(served, local(links.vote("arxiv:2612.09999", True)))
    assert hostile.status_code == 200 and "<script>" not in hostile.text
    assert "&lt;script&gt;document.body.dataset.pwned = 1&lt;/script&gt;" in hostile.text


def test_a_vote_link_of_a_public_page_leads_to_no_vote_history(
        served: Served, deployed: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """Anyone who sees an issue page has its links: their vote pages never link the
    reader's feedback page, and the tokens of the two kinds of links do not mix."""
    (issue,) = sorted((deployed.config().site / "ana").glob("0001-*.html"))
    page = get(served, f"/ana/{issue.name}")
    assert page.status_code == 200
    href = re.search(r'<a class="vote" href="([^"]*)" data-feedback="like">', page.text)
    assert href is not None
    target = local(html.unescape(href.group(1)))
    query = parse_qs(urlsplit(target).query)
    assert query["s"] == ["1"] and query["u"] == ["ana"] and query["v"] == ["like"]
    key = query["p"][0]

    shown = get(served, target)
    assert shown.status_code == 200 and shown.text.count("<button") == 1
    assert form_action(shown.text) == target
    assert "feedback?" not in shown.text and "All your votes" not in shown.text
    assert votes_of(capsys, deployed, "ana") == []
    done = get(served, target, method="POST")
    assert done.status_code == 200 and "more papers like this" in done.text
    assert "feedback?" not in done.text
    assert votes_of(capsys, deployed, "ana") == [(key, "like")]

    links = links_of(deployed, "ana")
    mailed = local(links.vote(key, True))
    assert "s=1" not in mailed
    for bad in (mailed + "&s=1", target.replace("&s=1", ""), target.replace("s=1", "s=0")):
        for method in ("GET", "POST"):
            assert get(served, bad, method=method).status_code == 400, (bad, method)
    mail_page = get(served, mailed)
    assert mail_page.status_code == 200
    assert local(links.feedback).replace("&", "&amp;") in mail_page.text
    assert votes_of(capsys, deployed, "ana") == [(key, "like")]


def ranked(capsys: pytest.CaptureFixture[str], project: Project,
           dump: Path) -> list[dict[str, Any]]:
    code, out, err = cli(capsys, "rank", str(dump), "--config", str(project.config_path),
                         "--subscriber", "ana", "--no-semantic", "--json")
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_a_like_on_the_web_changes_the_next_ranking(
        served: Served, deployed: Project, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dump = write_dump(tmp_path / "again.json")
    before = ranked(capsys, deployed, dump)
    assert GRASP in [r["title"] for r in before]
    assert not any(r["similar"] for r in before)
    like = local(links_of(deployed, "ana").vote(key_of(GRASP), True))
    assert get(served, like, method="POST").status_code == 200
    after = ranked(capsys, deployed, dump)
    assert GRASP not in [r["title"] for r in after]  # a judged paper is not new again
    similar = {r["title"] for r in after if GRASP in r["similar"]}
    assert similar and similar <= {t for t, _ in PAPERS["robot"]}


# --- abuse limits --------------------------------------------------------------------------

def test_methods_and_body_limits(served: Served, deployed: Project,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        for target in ("/", "/feeds/ana.atom", "/site.css"):
            refused = get(served, target, method=method)
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        refused = get(served, "/unsubscribe", method=method)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST"
    assert get(served, "/", method="POST").status_code == 405
    target = local(mailed_unsubscribe(deployed, "ana"))
    big = b"List-Unsubscribe=One-Click&pad=" + b"x" * (web.MAX_BODY + 10)
    for body in (big, b"x" * (web.SERVER_MAX_BODY + 1000)):
        response = get(served, target, method="POST", content=body,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413
    chunked = get(served, target, method="POST", content=iter([big]),
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 413
    assert mail_of(capsys, deployed, "ana") == "on"


def test_a_burst_of_bad_tokens_is_slowed_per_forwarded_address(
        deployed: Project, capsys: pytest.CaptureFixture[str]) -> None:
    good = local(mailed_unsubscribe(deployed, "ana"))
    bad = "/vote?u=ana&p=arxiv%3A2612.00000&v=like&t=" + "0" * 40
    attacker, reader = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.4"}
    with serving(deployed.config_path, "--trusted-proxy", "127.0.0.1") as served:
        for _ in range(web.BAD_TOKEN_LIMIT):
            assert get(served, bad, headers=attacker).status_code == 400
        slowed = get(served, bad, headers=attacker)
        assert slowed.status_code == 429
        assert 1 <= int(slowed.headers["retry-after"]) <= web.BAD_TOKEN_WINDOW
        assert get(served, good, headers=attacker).status_code == 429  # even a good token
        assert get(served, "/", headers=attacker).status_code == 200  # the site is not
        assert get(served, good, headers=reader).status_code == 200
        done = get(served, good, method="POST", headers=reader,
                   data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        line = served.wait_for(r'^198\.51\.100\.4 .*"POST /unsubscribe')
        assert COMBINED.match(line)
        assert served.wait_for(r'^203\.0\.113\.9 .*" 429 ')
        assert "--trusted-proxy ADDR" not in served.log()  # it was given
    assert mail_of(capsys, deployed, "ana") == "unsubscribed"


def test_without_a_trusted_proxy_forwarded_headers_are_ignored(deployed: Project) -> None:
    bad = "/feedback?u=ana&t=" + "1" * 40
    with serving(deployed.config_path) as served:
        for n in range(web.BAD_TOKEN_LIMIT):
            response = get(served, bad, headers={"X-Forwarded-For": f"192.0.2.{n}"})
            assert response.status_code == 400
        assert get(served, bad, headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 429
        served.wait_for(r'^127\.0\.0\.1 .*" 429 ')
        assert not any(line.startswith("192.0.2.") for line in served.log)
        notes = [line for line in served.log if "--trusted-proxy ADDR" in line]
        assert len(notes) == 1 and notes[0].startswith("digest: note: behind a reverse proxy")


def test_the_throttle_window_passes_and_its_table_is_bounded() -> None:
    throttle = web.Throttle(limit=3, window=60, capacity=4)
    for _ in range(3):
        assert throttle.retry_after("a", 100.0) == 0
        throttle.failed("a", 100.0)
    assert throttle.retry_after("a", 100.0) == 60
    assert throttle.retry_after("a", 130.5) == 30
    assert throttle.retry_after("a", 160.0) == 0  # the window passed
    throttle.failed("a", 161.0)
    assert throttle.retry_after("a", 161.0) == 0  # a fresh window: one bad token so far
    for n in range(1000):
        throttle.failed(f"10.0.{n // 250}.{n % 250}", 170.0 + n / 1000)
    assert len(throttle) <= 4


# --- headers, the log, errors --------------------------------------------------------------

def test_security_headers(served: Served, deployed: Project) -> None:
    target = local(mailed_unsubscribe(deployed, "ana"))
    for response in (get(served, "/"), get(served, target), get(served, "/nope"),
                     get(served, "/unsubscribe?u=ana&t=x")):
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["server"] == "digest"
    page = get(served, target)
    assert page.headers["cache-control"] == "no-store"
    assert "style=" not in page.text and "<script" not in page.text
    assert "<style" not in page.text and 'href="/site.css"' in page.text
    feed = get(served, "/feeds/ana.atom")
    assert feed.headers["x-content-type-options"] == "nosniff"
    assert feed.headers["referrer-policy"] == "no-referrer"


def test_the_access_log_is_combined_and_keeps_no_token(
        served: Served, deployed: Project) -> None:
    links = links_of(deployed, "ana")
    target = local(mailed_unsubscribe(deployed, "ana"))
    get(served, target, headers={"User-Agent": b'Evil "UA" \\ \xe9',
                                 "Referer": target})
    get(served, local(links.vote(key_of(GRASP), True)), method="POST")
    get(served, local(links.feedback).replace("t=", "%74="))
    get(served, "/feeds/ana.atom?x=1")
    raw_socket(served, b"GET /\x01\x1b[31m HTTP/1.1")
    served.wait_for(r'"GET /\\x01\\x1b\[31m HTTP/1.1" 404 ')
    lines = [line for line in served.log if not line.startswith("digest: ")]
    assert len(lines) == 5
    for line in lines:
        found = COMBINED.match(line)
        assert found, line
        assert found.group(1) == "127.0.0.1"
    first = COMBINED.match(lines[0])
    assert first is not None
    assert first.group(3) == "GET /unsubscribe?u=ana&t=[redacted] HTTP/1.1"
    assert first.group(4) == "200" and int(first.group(5)) > 0
    assert first.group(6) == "/unsubscribe?u=ana&t=[redacted]"
    assert first.group(7) == 'Evil \\"UA\\" \\\\ \\xe9'
    assert "%74=[redacted]" in lines[2]
    assert '"GET /feeds/ana.atom?x=1 HTTP/1.1" 200 ' in lines[3]
    log = served.log()
    for token in (links.unsubscribe_token, parse_qs(urlsplit(links.feedback).query)["t"][0],
                  parse_qs(urlsplit(links.vote(key_of(GRASP), True)).query)["t"][0]):
        assert token not in log


def call(app: Any, target: str, method: str = "GET",
         body: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    """Call a WSGI app in-process with a minimal environment."""
    path, _, query = target.partition("?")
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.update(status=status, headers=dict(headers))

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "192.0.2.1",
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    out = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], out


class BrokenRenderer(Renderer):
    """Renders nothing: every page raises, naming a private path."""

    def page(self, name: str, context: dict[str, Any]) -> str:
        raise RuntimeError(f"cannot render {name} from /srv/private/templates")


def test_an_error_in_a_handler_is_a_plain_500_and_one_log_line(deployed: Project,
                                                                clock: Clock) -> None:
    lines: list[str] = []
    config = deployed.config()
    app = web.make_app(config, renderer=BrokenRenderer(config.templates), clock=clock,
                       log=lines.append)
    target = local(links_of(deployed, "ana").unsubscribe)
    status, headers, body = call(app, target)
    assert status == "500 Internal Server Error"
    assert headers["Content-Security-Policy"] == CSP
    assert b"/srv/private" not in body and b"Traceback" not in body and b"ana" not in body
    assert lines[0] == ("digest: error: GET /unsubscribe?u=ana&t=[redacted]: RuntimeError: "
                        "cannot render web_unsubscribe.html.j2 from /srv/private/templates")
    assert lines[1] == ('192.0.2.1 - - [23/Nov/2026:09:00:00 +0000] '
                        f'"GET {target.split("&t=")[0]}&t=[redacted] HTTP/1.1" 500 '
                        f'{len(body)} "-" "-"')
    assert len(lines) == 2
    status, _, _ = call(app, "/site.css")  # the static files do not need the renderer
    assert status == "200 OK"


def test_a_site_under_a_path_is_served_only_there(project: Project, clock: Clock,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    deploy(project, clock, site_url="https://x.example/papers/")
    config = project.config()
    assert config.site_path == "/papers/"
    secret = secret_of(project)
    links = WebLinks("https://x.example/papers/", secret, "ana")
    with serving(project.config_path) as served:
        assert served.base.endswith("/papers/")
        assert get(served, "/papers/").content == (config.site / "index.html").read_bytes()
        moved = get(served, "/papers")
        assert moved.status_code == 301 and moved.headers["location"] == "/papers/"
        assert get(served, "/papers/ana").headers["location"] == "/papers/ana/"
        assert get(served, "/papers/feeds/ana.atom").status_code == 200
        for outside in ("/", "/index.html", "/feeds/ana.atom", "/paperss/", "/site.css",
                        local(links.unsubscribe).replace("/papers", "")):
            assert get(served, outside).status_code == 404, outside
        page = get(served, local(links.unsubscribe))
        assert page.status_code == 200 and 'href="/papers/site.css"' in page.text
        assert form_action(page.text) == local(links.unsubscribe)
        assert form_action(page.text).startswith("/papers/unsubscribe?")
        done = get(served, local(links.unsubscribe), method="POST",
                   data={"List-Unsubscribe": "One-Click"})
        assert form_action(done.text).startswith("/papers/resubscribe?")
    assert mail_of(capsys, project, "ana") == "unsubscribed"


def test_a_site_under_a_non_ascii_path_with_non_ascii_feeds(project: Project,
                                                            clock: Clock) -> None:
    deploy(project, clock, site_url="https://x.example/日本/", feeds_dir="фиды")
    config = project.config()
    assert config.site_path == "/日本/" and config.feeds_dir.name == "фиды"
    mount, feeds = "/%E6%97%A5%E6%9C%AC/", "%D1%84%D0%B8%D0%B4%D1%8B"
    with serving(project.config_path) as served:
        assert served.base.endswith("/日本/")
        index = get(served, mount)
        assert index.status_code == 200
        assert index.content == (config.site / "index.html").read_bytes()
        feed = get(served, f"{mount}{feeds}/ana.atom")
        assert feed.status_code == 200
        assert feed.content == (config.feeds_dir / "ana.atom").read_bytes()
        moved = get(served, mount.rstrip("/"))
        assert moved.status_code == 301 and moved.headers["location"] == mount
        assert get(served, f"{mount}ana").headers["location"] == f"{mount}ana/"
        links = WebLinks("https://x.example/日本/", secret_of(project), "ana")
        page = get(served, local(links.unsubscribe).replace("/日本/", mount))
        assert page.status_code == 200 and form_action(page.text) == local(links.unsubscribe)
        for bad in (f"{mount}%c2%85", f"{mount}%c2%85index.html", f"{mount}%ff",
                    f"{mount}{feeds}/ana.atom%ff", "/%E6%97%A5%E6%9C/", "/"):
            assert get(served, bad).status_code == 404, bad
        status, _ = raw_socket(served, f"GET {mount}\xc2\x85 HTTP/1.1".encode("latin-1"))
        assert status in (400, 404)


@pytest.mark.parametrize(("target", "logged"), [
    ("/x?t=abc", "/x?t=[redacted]"), ("/x?u=a&t=abc&t=def", "/x?u=a&t=[redacted]&t=[redacted]"),
    ("/x?tt=abc&t", "/x?tt=abc&t"), ("/x?%74=abc", "/x?%74=[redacted]"), ("/x", "/x"),
])
def test_redact(target: str, logged: str) -> None:
    assert web.redact(target) == logged
