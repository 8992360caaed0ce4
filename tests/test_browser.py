"""The web face and the e-mail as a person sees them, in headless Chromium.

A run builds the site, ``digest serve`` serves it, and a real browser loads the index, an
archive, an issue, a vote confirmation and an unsubscribe confirmation, light and dark, on
a desktop and a phone: no console errors (the strict CSP reports any inline style or
script there), a feed to discover, a hostile title shown as text and never run, no
sideways scrolling on a phone, a dark page in dark mode, and readable text in both. The
e-mail's HTML part is checked at 600 and 375 px the same way (as a file: it has no CSP).

Screenshots are kept in ``tmp_path`` and, when $DIGEST_TEST_ARTIFACTS names a folder,
copied there too (CI can keep them). The first tests check the driver itself.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from browser import (
    COLOURS_JS,
    CONTRAST_JS,
    OVERFLOW_JS,
    Browser,
    BrowserError,
    Loaded,
    luminance,
)
from conftest import DEFAULT_SUBSCRIBERS, Clock, Project, dated
from mailserver import free_port, smtp_table
from serving import serving

from digest import links, pipeline, tokens
from digest.store import Store

SITE_URL = "https://digest.example.org/"  # the project fixture's site_url
PNG = b"\x89PNG\r\n\x1a\n"

HOSTILE_TITLE = ('Medical <img src=x onerror="document.body.dataset.pwned=1"> segmentation '
                 "<script>document.body.dataset.pwned=2</script>")


def _item(arxiv_id: str, title: str, summary: str, authors: list[str],
          upvotes: int) -> dict[str, Any]:
    return {"paper": {"id": arxiv_id, "title": title, "summary": summary, "upvotes": upvotes,
                      "authors": [{"name": a} for a in authors]},
            "submittedOnDailyAt": "2026-11-23T10:00:00.000Z"}


# A small day of papers (the Hugging Face daily JSON shape): the hostile one matches
# 'ana' best (medical, CLIP, data curation), so it leads her issue.
DAILY = [
    _item("2411.07777", HOSTILE_TITLE,
          "We segment medical images with CLIP features learned on curated data. Data "
          "curation of medical scans matters more than model size for medical segmentation.",
          ["Ana <b>Bee</b>", "Carl Dee"], 12),
    _item("2411.07778", "Data Curation Rules for CLIP Pretraining at Scale",
          "We compare data curation rules for CLIP pretraining on a billion image-text pairs "
          "and find that simple deduplication beats learned filters. Code: "
          "https://github.com/multimodal-lab/clip-curation-rules-benchmark", ["Bo Cee"], 30),
    _item("2411.07779", "Sparse Mixture-of-Experts for Long-Context Speech Recognition",
          "A sparse mixture of experts keeps speech recognition accurate on hour-long audio "
          "while halving the compute of a dense model.", ["Dana Eff", "Eli Gee"], 8),
    _item("2411.07780", "A Benchmark of Tabular Reasoning in Language Models",
          "We release a benchmark of 4,000 table questions and show that chain-of-thought "
          "helps only when the table fits the context window.", ["Fay Hill"], 4),
]


def rebased(url: str, base: str) -> str:
    """A site URL (under SITE_URL) made to point at the local server."""
    assert url.startswith(SITE_URL), url
    return base + url[len(SITE_URL):]


def keep(shot: Path) -> None:
    """Copy a screenshot to $DIGEST_TEST_ARTIFACTS, when it names a folder."""
    folder = os.environ.get("DIGEST_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / shot.name)


def assert_png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG), f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes: a blank page?"
    return data


# --- The driver itself --------------------------------------------------------------------

DRIVER_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="own.css"></head>
<body><p class="inline" style="color: red">inline style</p><img src="missing.png" alt="">
<script>console.error("told: " + 6 * 7); null.boom;</script>
<p id="mode">text</p><p class="faint">faint</p></body></html>"""
DRIVER_CSS = ("body { background: #fff; color: #111; } .faint { color: #bbb; }\n"
              "@media (prefers-color-scheme: dark) { body { background: #111; color: #eee; } }\n")


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[str]:
    """A page on a loopback HTTP server that sends the site's kind of strict CSP."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "page.html").write_text(DRIVER_PAGE, encoding="utf-8")
    (root / "own.css").write_text(DRIVER_CSS, encoding="utf-8")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def end_headers(self) -> None:
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'self'")
            super().end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_driver_reports_csp_violations_failed_loads_and_script_errors(
        static_site: str, tmp_path: Path) -> None:
    with Browser.launch(tmp_path / "profile") as browser:
        page = browser.open(static_site + "page.html")
        assert page.status == 200
        errors = "\n".join(page.console_errors)
        assert "inline style" in errors and "Content Security Policy" in errors  # style=""
        assert "Executing inline script" in errors  # the CSP blocked the script, so ...
        assert "told: 42" not in errors  # ... it never ran
        assert "missing.png" in errors  # default-src 'none' blocks the image
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == \
            "rgb(255, 255, 255)"  # the page's own stylesheet did load
        missing = browser.open(static_site + "nope.html")
        assert missing.status == 404
        with pytest.raises(BrowserError, match="ERR_CONNECTION_REFUSED"):
            browser.open(f"http://127.0.0.1:{free_port()}/")  # nothing listens there


def test_the_driver_loads_files_emulates_a_dark_phone_and_takes_screenshots(
        tmp_path: Path) -> None:
    html = tmp_path / "page.html"
    html.write_text(DRIVER_PAGE.replace("own.css", "style.css"), encoding="utf-8")
    (tmp_path / "style.css").write_text(DRIVER_CSS + "p { font-size: 40px; }\n",
                                        encoding="utf-8")
    with Browser.launch(tmp_path / "profile") as browser:
        light = browser.open(html.as_uri(), width=800, height=600)
        errors = "\n".join(light.console_errors)
        assert "told: 42" in errors  # no CSP on a file: the script ran and threw
        assert "Cannot read properties of null" in errors
        assert "missing.png" in errors  # and a missing file is a failed load
        assert light.evaluate("[innerWidth, devicePixelRatio, "
                              "matchMedia('(prefers-color-scheme: dark)').matches]") == \
            [800, 1, False]
        assert "<p id=\"mode\">text</p>" in light.dom()
        assert [(bad["element"], bad["ratio"]) for bad in light.evaluate(CONTRAST_JS)] == \
            [("p.faint", 1.92)]  # #bbb on white
        dark = browser.open(html.as_uri(), dark=True, mobile=True)
        assert dark.evaluate("[innerWidth, innerHeight, devicePixelRatio, "
                             "matchMedia('(prefers-color-scheme: dark)').matches]") == \
            [375, 812, 2, True]
        assert dark.evaluate(CONTRAST_JS) == []  # #bbb on #111 reads well
        colours = dark.evaluate(COLOURS_JS)
        assert luminance(colours["background"]) < 0.2 < 0.5 < luminance(colours["text"])
        one, two = tmp_path / "light.png", tmp_path / "dark.png"
        light.screenshot(one)
        dark.screenshot(two)
        assert assert_png(one) != assert_png(two)
        cropped = tmp_path / "cropped.png"
        dark.screenshot(cropped, max_height=100)
        assert cropped.stat().st_size < two.stat().st_size


# --- The site, served ---------------------------------------------------------------------

def make_project(project: Project, tmp_path: Path, clock: Clock) -> None:
    """The project with mail configured (never sent) and a run over DAILY done."""
    project.write_config(DEFAULT_SUBSCRIBERS, extra="also_new = 1000\n" + smtp_table(2525))
    dump = tmp_path / "daily.json"
    dump.write_text(json.dumps(DAILY), encoding="utf-8")
    dated(project.drop(dump))
    report = pipeline.run(project.config(), now=clock, send=False)
    assert report.new_papers == len(DAILY)


def origin(url: str) -> str:
    """scheme://host:port of a URL."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def fetch_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def check_page(browser: Browser, name: str, url: str, base: str, shots: Path,
               findings: list[str], *, feed: bool, hostile_shown: bool) -> Loaded:
    """Load ``url`` light on a desktop and dark on a phone; add what is wrong to findings."""
    def problem(what: str) -> None:
        findings.append(f"{name} ({url}): {what}")

    desktop = browser.open(url, width=1280, height=900)
    phone = browser.open(url, dark=True, mobile=True)
    for view, page in (("desktop light", desktop), ("phone dark", phone)):
        if page.status != 200:
            problem(f"{view}: HTTP status {page.status}")
        for error in page.console_errors:
            if "/favicon.ico" not in error:  # it may or may not come in time: checked below
                problem(f"{view}: console error: {error}")
        text = str(page.evaluate("document.body.innerText"))
        if page.evaluate("document.body.dataset.pwned") is not None:
            problem(f"{view}: the hostile title's script ran")
        if page.evaluate("[...document.images].filter(i => i.getAttribute('src') === 'x')"
                         ".length"):
            problem(f"{view}: the hostile title's <img> became an element")
        if page.evaluate("[...document.scripts].some(s => s.text.includes('pwned'))"):
            problem(f"{view}: the hostile title's <script> became an element")
        if ("segmentation" in text or hostile_shown) and "<img src=x" not in text:
            problem(f"{view}: the hostile title is not shown as text "
                    f"(innerText has no '<img src=x')")
        for bad in page.evaluate(CONTRAST_JS):
            problem(f"{view}: low contrast {bad['ratio']}:1 for <{bad['element']}> "
                    f"{bad['text']!r} ({bad['color']} on {bad['background']})")
    if feed:
        href = desktop.evaluate(
            "document.querySelector('link[rel=alternate][type=\"application/atom+xml\"]')"
            "?.href ?? null")
        if href is None:
            problem("no <link rel=alternate type=application/atom+xml> to discover the feed")
        elif not str(href).startswith(SITE_URL):
            problem(f"the feed link {href} is not under site_url")
        elif (status := fetch_status(rebased(str(href), base))) != 200:
            problem(f"the feed link {href} answers {status} on the server")
    icon = desktop.evaluate("document.querySelector('link[rel~=icon]')?.href ?? null")
    if (icon is None and not any("favicon.ico answers" in f for f in findings)
            and (status := fetch_status(origin(url) + "/favicon.ico")) >= 400):  # said once
        problem(f"no <link rel=icon> and /favicon.ico answers {status}: the browser asks for "
                "it after every page and logs the failure as a console error")
    size = phone.evaluate(OVERFLOW_JS)
    if size["innerWidth"] != 375:
        problem(f"phone: the layout viewport is {size['innerWidth']} px, not the phone's 375 "
                "(a missing or wrong viewport meta tag)")
    if size["scrollWidth"] > size["innerWidth"]:
        problem(f"phone: scrolls sideways ({size['scrollWidth']} px wide in a "
                f"{size['innerWidth']} px window; too wide: {size['wide']}; long words: "
                f"{size['words']})")
    colours = phone.evaluate(COLOURS_JS)
    background, text_colour = luminance(colours["background"]), luminance(colours["text"])
    if background >= 0.2 or text_colour <= 0.4:
        problem(f"dark mode: body background rgb{tuple(colours['background'][:3])} "
                f"(luminance {background:.2f}) and text rgb{tuple(colours['text'][:3])} "
                f"(luminance {text_colour:.2f}); want a dark background and light text")
    light, dark = shots / f"{name}-desktop-light.png", shots / f"{name}-phone-dark.png"
    desktop.screenshot(light)
    phone.screenshot(dark)
    for shot in (light, dark):
        keep(shot)
    assert assert_png(light) != assert_png(dark), f"{name}: the light and dark shots are equal"
    phone.close()
    return desktop


def test_the_served_site_in_a_real_browser(project: Project, tmp_path: Path,
                                           clock: Clock) -> None:
    make_project(project, tmp_path, clock)
    config = project.config()
    issues = sorted((config.site / "ana").glob("[0-9][0-9][0-9][0-9]-*.html"))
    assert issues, f"the run wrote no issue page for ana under {config.site}"
    secret = tokens.load_secret(config.data_dir)
    assert secret is not None
    shots = tmp_path / "shots"
    findings: list[str] = []
    with serving(project.config_path) as served, \
            Browser.launch(tmp_path / "profile") as browser:
        base = served.base.rstrip("/") + "/"
        index = check_page(browser, "index", base, base, shots, findings, feed=True,
                           hostile_shown=False)
        hrefs = index.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
        archive_url = base + "ana/"
        if not any(h in (archive_url, archive_url + "index.html", SITE_URL + "ana/")
                   for h in hrefs):
            findings.append(f"index ({base}): no link to ana's archive; links: {hrefs}")
        archive = check_page(browser, "archive", archive_url, base, shots, findings, feed=True,
                             hostile_shown=False)
        issue_url = f"{base}ana/{issues[-1].name}"
        hrefs = archive.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
        if not any(h.endswith(f"ana/{issues[-1].name}") for h in hrefs):
            findings.append(f"archive ({archive_url}): no link to {issues[-1].name}; "
                            f"links: {hrefs}")
        issue = check_page(browser, "issue", issue_url, base, shots, findings, feed=True,
                           hostile_shown=True)
        votes = issue.evaluate("[...document.querySelectorAll('a[data-feedback]')]"
                               ".map(a => [a.dataset.feedback, a.href])")
        assert {kind for kind, _ in votes} == {"like", "dislike"}, \
            f"issue ({issue_url}): no 👍/👎 links (a[data-feedback]): {votes}"
        # The hostile paper's 👍: its confirmation page names the paper, so shows the title.
        like = next((href for kind, href in votes if kind == "like" and "2411.07777" in href),
                    None)
        assert like is not None and like.startswith(SITE_URL + "vote?"), votes
        vote = check_page(browser, "vote", rebased(like, base), base, shots, findings,
                          feed=False, hostile_shown=False)
        unsubscribe = links.WebLinks(config.site_url or SITE_URL, secret, "ana").unsubscribe
        leave = check_page(browser, "unsubscribe", rebased(unsubscribe, base), base, shots,
                           findings, feed=False, hostile_shown=False)
        for name, page in (("vote", vote), ("unsubscribe", leave)):
            buttons = page.evaluate("document.querySelectorAll('form button, form "
                                    "input[type=submit]').length")
            if buttons != 1:
                findings.append(f"{name} ({page.url}): {buttons} buttons, want one")
        assert served.process.poll() is None, "digest serve died:\n" + served.log()
    # Merely looking voted for nothing and unsubscribed no one (a GET shows a button).
    store = Store.open(config.store_path)
    try:
        assert store.votes("ana") == []
        assert store.unsubscribed() == set()
    finally:
        store.close()
    assert not findings, "the pages a person sees have problems:\n" + "\n".join(findings)


# --- The e-mail ---------------------------------------------------------------------------

def test_the_email_html_in_a_real_browser(project: Project, tmp_path: Path,
                                          clock: Clock) -> None:
    make_project(project, tmp_path, clock)
    config = project.config()
    store = Store.open(config.store_path)
    try:
        pending = store.deliveries(("pending",))
    finally:
        store.close()
    assert [d.subscriber for d in pending] == ["ana"]
    message = email.message_from_bytes(pending[0].raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None, "the e-mail has no text/html part"
    html = tmp_path / "email.html"
    html.write_text(part.get_content(), encoding="utf-8")
    findings: list[str] = []
    with Browser.launch(tmp_path / "profile") as browser:
        for width in (600, 375):
            page = browser.open(html.as_uri(), width=width, height=900)
            where = f"e-mail at {width} px"
            findings += [f"{where}: console error: {e}" for e in page.console_errors]
            size = page.evaluate(OVERFLOW_JS)
            if size["scrollWidth"] > size["innerWidth"]:
                findings.append(f"{where}: scrolls sideways ({size['scrollWidth']} px wide; "
                                f"too wide: {size['wide']}; long words: {size['words']})")
            text = str(page.evaluate("document.body.innerText"))
            if "<img src=x" not in text or page.evaluate("document.body.dataset.pwned"):
                findings.append(f"{where}: the hostile title is not inert text")
            for bad in page.evaluate(CONTRAST_JS):
                findings.append(f"{where}: low contrast {bad['ratio']}:1 for "
                                f"<{bad['element']}> {bad['text']!r}")
            shot = tmp_path / "shots" / f"email-{width}.png"
            page.screenshot(shot)
            keep(shot)
            assert_png(shot)
    assert not findings, "the e-mail has problems:\n" + "\n".join(findings)
