"""A real HTTP server on 127.0.0.1 serving fixture documents, with ETags and scripted faults."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class Web:
    """routes: URL path -> (file, content type); faults: path -> "500" | "slow" | "junk"."""

    def __init__(self, routes: dict[str, tuple[Path, str]]) -> None:
        self.routes = routes
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                web.requests.append((self.path, dict(self.headers)))
                fault = web.faults.get(path)
                if fault == "429":
                    web.faults.pop(path)  # busy once, then fine
                    self.send_response(429)
                    self.send_header("Retry-After", "7")
                    self.end_headers()
                    return
                if fault == "500" or path not in web.routes:
                    self.send_response(500 if fault else 404)
                    self.end_headers()
                    return
                if fault == "slow":
                    time.sleep(1.5)  # the client's time-out is shorter
                file, kind = web.routes[path]
                body = b"{ this is not [ json" if fault == "junk" else file.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:12] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Web:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
