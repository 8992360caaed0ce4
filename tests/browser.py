"""A small DevTools-protocol driver for headless Chromium (Debian's ``chromium``).

Enough to load a page as a person would and look at it: console errors (CSP violations
and failed loads included), a script's value, the DOM, a full-page screenshot, light or
dark colour scheme, a desktop window or a phone. No fixed sleeps: every wait reads the
browser's messages until the one awaited arrives, or a deadline passes::

    with Browser.launch(profile_dir) as browser:
        page = browser.open("http://127.0.0.1:8000/", width=375, dark=True, mobile=True)
        assert not page.console_errors
        page.screenshot(tmp_path / "index.png")

One browser process per ``launch``; each ``open`` makes a fresh tab (closed with the
browser, or earlier with ``Loaded.close``). Errors are ``BrowserError``; a missing
Chromium is ``BrowserMissing`` (a failure, never a skip: the tests need it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import websocket

START_TIMEOUT = 60.0  # a cold start on a loaded CI machine takes a few seconds
LOAD_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
PHONE = (375, 812, 2.0)  # width, height, device scale factor (an iPhone X-sized screen)

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
Json = dict[str, Any]


class BrowserError(RuntimeError):
    """Chromium did not start, answer, or load a page in time, or a script threw."""


class BrowserMissing(BrowserError):
    """No Chromium on this machine."""


def chromium_path() -> str:
    """The Chromium binary, or ``BrowserMissing`` saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise BrowserMissing("headless Chromium is needed for the browser tests: install "
                             "Debian's package (apt-get install chromium; .ci/run does)")
    return found


class _Connection:
    """One DevTools websocket: numbered calls, and the events that arrive meanwhile."""

    def __init__(self, url: str, on_event: Callable[[Json], None] | None = None) -> None:
        # suppress_origin: Chromium refuses websocket clients that send an Origin header
        # unless started with --remote-allow-origins.
        self.ws = websocket.create_connection(url, timeout=CALL_TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.events: list[Json] = []  # not yet taken by wait_event
        self.on_event = on_event

    def _read(self, deadline: float, what: str) -> Json:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(f"timed out waiting for {what}")
        self.ws.settimeout(left)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise BrowserError(f"timed out waiting for {what}") from None
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"the browser connection broke waiting for {what}: "
                               f"{exc}") from None
        message: Json = json.loads(raw)
        if "method" in message:
            if self.on_event is not None:
                self.on_event(message)
            self.events.append(message)
        return message

    def call(self, method: str, timeout: float = CALL_TIMEOUT, **params: Any) -> Json:
        """Send one command and read until its answer; events are kept meanwhile."""
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline, method)
            if message.get("id") != call_id:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error'].get('message')}")
            result: Json = message.get("result", {})
            return result

    def wait_event(self, method: str, timeout: float,
                   match: Callable[[Json], bool] = lambda params: True) -> Json:
        """The first event ``method`` (already seen or still to come) that ``match`` takes."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.events)):
                event = self.events[i]
                if event["method"] == method and match(event.get("params", {})):
                    del self.events[: i + 1]
                    params: Json = event.get("params", {})
                    return params
            seen = len(self.events)
            self._read(deadline, method)

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.close()


def _console_text(event: Json) -> str | None:
    """The text of an error-level console, exception or log event; None for others."""
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        parts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
        return "console.error: " + " ".join(parts)
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        described = details.get("exception", {}).get("description")
        return "uncaught: " + str(described or details.get("text", "exception"))
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        if entry.get("level") == "error":
            where = f" ({entry['url']})" if entry.get("url") else ""
            return f"{entry.get('source', 'log')}: {entry.get('text', '')}{where}"
    return None


@dataclass
class Loaded:
    """A tab that has loaded a page (its load event fired)."""

    url: str
    target_id: str
    conn: _Connection
    browser: Browser
    status: int | None = None  # the main document's HTTP status (file:// gives none or 200)
    console_errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # every console/log line, any level

    def evaluate(self, js: str, timeout: float = CALL_TIMEOUT) -> Any:
        """The value of a JS expression (promises awaited); BrowserError if it throws."""
        result = self.conn.call("Runtime.evaluate", timeout=timeout, expression=js,
                                returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}")
        return result.get("result", {}).get("value")

    def dom(self) -> str:
        """The serialized DOM as it stands now (after scripts, if any ran)."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path, *, max_height: int | None = None) -> Path:
        """A PNG of the whole page (or its top ``max_height`` CSS pixels) at ``path``."""
        self.front()
        metrics = self.conn.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        viewport = metrics.get("cssLayoutViewport") or metrics["layoutViewport"]
        width = max(float(size["width"]), float(viewport["clientWidth"]))
        height = max(float(size["height"]), float(viewport["clientHeight"]))
        if max_height is not None:
            height = min(height, float(max_height))
        shot = self.conn.call("Page.captureScreenshot", format="png",
                              captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": width, "height": height,
                                    "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def settle(self) -> None:
        """Let a frame render and read every message the browser sent before it."""
        self.front()
        self.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")

    def front(self) -> None:
        """Make this the visible tab: a hidden one renders no frames (no screenshot, no rAF)."""
        self.conn.call("Page.bringToFront")

    def close(self) -> None:
        """Close the tab."""
        self.conn.close()
        with contextlib.suppress(BrowserError):
            self.browser.conn.call("Target.closeTarget", targetId=self.target_id)


class Browser:
    """One headless Chromium process and its browser-level DevTools connection."""

    def __init__(self, process: subprocess.Popen[bytes], ws_url: str, stderr: list[str],
                 owned_profile: tempfile.TemporaryDirectory[str] | None) -> None:
        self.process = process
        self.ws_url = ws_url
        self.stderr = stderr
        self.conn = _Connection(ws_url)
        self.pages: list[Loaded] = []
        self._owned_profile = owned_profile

    @classmethod
    def launch(cls, profile_dir: Path | None = None, *,
               timeout: float = START_TIMEOUT) -> Browser:
        """Start headless Chromium on a free port; its profile in ``profile_dir``.

        Without ``profile_dir`` a temporary one is made and removed on close.
        """
        binary = chromium_path()
        owned = None
        if profile_dir is None:
            owned = tempfile.TemporaryDirectory(prefix="digest-chromium-")
            profile_dir = Path(owned.name)
        profile_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--hide-scrollbars",
                "--mute-audio", f"--user-data-dir={profile_dir}",
                "--remote-debugging-port=0", "about:blank"]
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        lines: queue.Queue[str | None] = queue.Queue()
        log: list[str] = []

        def pump() -> None:
            assert process.stderr is not None
            for raw in process.stderr:  # until Chromium exits: a full pipe would block it
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="chromium-stderr", daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.0)) if left > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                _stop(process)
                why = "exited" if process.returncode is not None else "gave no DevTools address"
                raise BrowserError(f"{binary} {why} within {timeout:.0f} s; its stderr:\n"
                                   + "\n".join(log[-30:]))
            found = _LISTENING.search(line)
            if found:
                break
        try:
            return cls(process, found.group(1), log, owned)
        except (websocket.WebSocketException, OSError) as exc:
            _stop(process)
            raise BrowserError(f"cannot connect to {found.group(1)}: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The DevTools port Chromium chose."""
        found = re.match(r"ws://[^:/]+:(\d+)/", self.ws_url)
        assert found, self.ws_url
        return int(found.group(1))

    def open(self, url: str, *, width: int = 1280, height: int = 900, dark: bool = False,
             mobile: bool = False, timeout: float = LOAD_TIMEOUT) -> Loaded:
        """A new tab that has loaded ``url`` (its load event fired and a frame rendered).

        ``mobile`` emulates a phone (375x812 CSS pixels at 2x, mobile viewport rules, so
        a page without a viewport meta tag lays out 980 px wide); ``dark`` asks for
        ``prefers-color-scheme: dark``. A navigation error (connection refused, DNS,
        a missing file) is a BrowserError; an HTTP error status is not (see ``status``).
        """
        target = self.conn.call("Target.createTarget", url="about:blank")["targetId"]
        page_ws = re.sub(r"/devtools/browser/.*$", f"/devtools/page/{target}", self.ws_url)
        loaded: Loaded

        def on_event(event: Json) -> None:
            text = _console_text(event)
            if event["method"] in ("Runtime.consoleAPICalled", "Log.entryAdded"):
                loaded.console.append(text or json.dumps(event.get("params", {}))[:500])
            if text is not None:
                loaded.console_errors.append(text)
            params = event.get("params", {})
            if (event["method"] == "Network.responseReceived" and params.get("type") == "Document"
                    and params.get("frameId") == target):  # the main frame's id is the tab's
                loaded.status = int(params["response"]["status"])

        try:
            conn = _Connection(page_ws, on_event)
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"cannot connect to the new tab {page_ws}: {exc}") from None
        loaded = Loaded(url, target, conn, self)
        self.pages.append(loaded)
        if mobile:
            width, height, scale = PHONE
        else:
            scale = 1.0
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            conn.call(method)
        conn.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=scale, mobile=mobile)
        if mobile:
            conn.call("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=5)
        conn.call("Emulation.setEmulatedMedia", media="screen", features=[
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
        conn.events.clear()  # about:blank's own load is not the one awaited
        nav = conn.call("Page.navigate", url=url, timeout=timeout)
        if nav.get("errorText"):
            raise BrowserError(f"cannot load {url}: {nav['errorText']}")
        loader = nav.get("loaderId")
        # The new document's own load event: the one after its frame navigated (a late
        # event of the blank page the tab opened with comes before that).
        conn.wait_event("Page.frameNavigated", timeout, lambda p: (
            "parentId" not in p["frame"] and loader in (None, p["frame"].get("loaderId"))))
        conn.wait_event("Page.loadEventFired", timeout)
        loaded.settle()
        conn.events.clear()  # console lines were taken as they came; drop the rest
        return loaded

    def close(self) -> None:
        """Close every tab, ask the browser to quit, and make sure it did."""
        for page in self.pages:
            page.conn.close()
        self.pages.clear()
        with contextlib.suppress(BrowserError):  # it may close the socket before answering
            self.conn.call("Browser.close", timeout=10)
        self.conn.close()
        _stop(self.process)
        if self._owned_profile is not None:
            self._owned_profile.cleanup()
            self._owned_profile = None


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Wait for Chromium to exit; terminate, then kill, if it does not."""
    try:
        process.wait(grace)
        return
    except subprocess.TimeoutExpired:
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)



# Page checks the tests share (JavaScript run in the page; all return plain values).

OVERFLOW_JS = """(() => {
  const doc = document.documentElement;
  // The culprits: elements that reach past the window while none of their children do.
  const over = e => e.getBoundingClientRect().right > window.innerWidth + 0.5;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => over(e) && ![...e.children].some(over))
    .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')
      + ' ' + JSON.stringify((e.textContent || '').trim().slice(0, 40))
      + ' ' + Math.round(e.getBoundingClientRect().width) + 'px');
  // In a table the whole column grows instead, to fit its longest unbreakable word.
  const words = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (const m of n.textContent.matchAll(/\\S{16,}/g)) {
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const width = range.getBoundingClientRect().width;
      if (width > window.innerWidth * 0.75)
        words.push(JSON.stringify(m[0].slice(0, 60)) + ' ' + Math.round(width) + 'px');
    }
  }
  return {scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth, wide,
          words: words.slice(0, 5)};
})()"""

COLOURS_JS = """(() => {
  const parse = s => {
    const m = s.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const css = e => getComputedStyle(e);
  const body = document.body, html = document.documentElement;
  let bg = parse(css(body).backgroundColor);
  if (!bg || bg[3] === 0) bg = parse(css(html).backgroundColor);
  if (!bg || bg[3] === 0) {
    // No page background: the canvas is the browser's, dark only if the page opts in.
    const scheme = css(html).colorScheme || '';
    const dark = scheme.includes('dark') && matchMedia('(prefers-color-scheme: dark)').matches;
    bg = dark ? [18, 18, 18, 1] : [255, 255, 255, 1];
  }
  return {background: bg, text: parse(css(body).color)};
})()"""

# Every element with its own visible text whose colour contrasts too little with the
# background under it (WCAG AA: 4.5, or 3 for large text). Backgrounds are blended
# from the element up; an ancestor with a background image stops the search (unknown).
CONTRAST_JS = """(() => {
  const parse = s => {
    const m = (s || '').match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const lin = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const lum = c => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const html = document.documentElement;
  const darkCanvas = (getComputedStyle(html).colorScheme || '').includes('dark')
    && matchMedia('(prefers-color-scheme: dark)').matches;
  const canvas = darkCanvas ? [18, 18, 18, 1] : [255, 255, 255, 1];
  const background = e => {
    const layers = [];
    for (let n = e; n && n.nodeType === 1; n = n.parentElement) {
      const s = getComputedStyle(n);
      if (s.backgroundImage && s.backgroundImage !== 'none') return null;
      const c = parse(s.backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let bg = canvas;
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const bad = [];
  for (const e of document.querySelectorAll('body, body *')) {
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const s = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    if (s.visibility === 'hidden' || s.display === 'none' || r.width === 0 || r.height === 0)
      continue;
    const bg = background(e);
    if (!bg) continue;
    let opacity = 1;
    for (let n = e; n && n.nodeType === 1; n = n.parentElement)
      opacity *= Number(getComputedStyle(n).opacity);
    const fgRaw = parse(s.color);
    const fg = over([fgRaw[0], fgRaw[1], fgRaw[2], fgRaw[3] * opacity], bg);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(s.fontSize), weight = Number(s.fontWeight) || 400;
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      const text = [...e.childNodes].filter(n => n.nodeType === 3)
        .map(n => n.textContent).join('').trim().slice(0, 40);
      bad.push({element: e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''),
                text, ratio: Math.round(ratio * 100) / 100, color: s.color,
                background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(', ') + ')'});
    }
  }
  return bad;
})()"""


def luminance(rgb: list[float]) -> float:
    """WCAG relative luminance of an sRGB colour given as 0-255 channels."""
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
