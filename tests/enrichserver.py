"""A real HTTP server on 127.0.0.1 answering like the HF daily-papers and arXiv APIs.

``/api/daily_papers?date=D`` serves ``daily[D]`` (else ``[]``, as HF does for a day with no
papers); ``/api/query?search_query=Q`` serves ``arxiv[Q]`` (else an empty result feed).
Faults by path: ``faults`` last until removed, ``once`` are used up one per request:
"500", "404", "403", "429" (with ``Retry-After: retry_after``), "slow" (longer than the client's
time-out), "junk", "html" (a 200 login page), "big" (a body over any sane cap).
Each request is recorded with the injected clock's time, so tests can check spacing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DAILY = "/api/daily_papers"
ARXIV = "/api/query"


class Request:
    def __init__(self, at: float, path: str, query: dict[str, str], headers: dict[str, str]):
        self.at, self.path, self.query, self.headers = at, path, query, headers

    def __repr__(self) -> str:
        return f"Request({self.at}, {self.path}, {self.query})"


class EnrichServer:
    def __init__(self, empty_feed: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.daily: dict[str, Path] = {}
        self.arxiv: dict[str, Path] = {}
        self.faults: dict[str, str] = {}
        self.once: dict[str, list[str]] = {}
        self.retry_after = "7"
        self.big_bytes = 6_000_000
        self.requests: list[Request] = []
        self.clock = clock
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def send(self, status: int, body: bytes, kind: str,
                     extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                server.requests.append(Request(server.clock(), parts.path, query,
                                               dict(self.headers)))
                queued = server.once.get(parts.path)
                fault = queued.pop(0) if queued else server.faults.get(parts.path)
                if fault == "500":
                    return self.send(500, b"Internal Server Error", "text/plain")
                if fault in ("404", "403"):
                    return self.send(int(fault), b"Refused", "text/plain")
                if fault == "429":
                    return self.send(429, b"Too Many Requests", "text/plain",
                                     {"Retry-After": server.retry_after})
                if fault == "slow":
                    time.sleep(1.5)
                if fault == "junk":
                    return self.send(200, b"{ this is <not [ json or xml", "application/json")
                if fault == "html":
                    return self.send(200, b"<!doctype html><html><body><form>Sign in"
                                     b"</form></body></html>", "text/html")
                if fault == "big":
                    return self.send(200, b"[" + b" " * server.big_bytes + b"]",
                                     "application/json")
                if parts.path == DAILY:
                    file = server.daily.get(query.get("date", ""))
                    body = file.read_bytes() if file else b"[]"
                    return self.send(200, body, "application/json; charset=utf-8")
                if parts.path == ARXIV:
                    file = server.arxiv.get(query.get("search_query", ""), empty_feed)
                    return self.send(200, file.read_bytes(), "application/atom+xml")
                return self.send(404, b"Not Found", "text/plain")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def asked(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> EnrichServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
