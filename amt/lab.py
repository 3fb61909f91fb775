"""`eml study serve`: the study's HIT pages on 127.0.0.1 for in-lab participants and pilots.

Each participant gets a link with a secret token (``/p/<token>``); the token
plays the worker id (hashed with the study salt like MTurk ids). The server
walks the participant through every HIT of the study, writes each submission
into the same ``responses.parquet`` as MTurk collection (``source = lab``), so
the analysis is identical, and thanks them at the end. Only stimulus files
(content-hash names) and pages are served; nothing else from the study folder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from amt.hit_page import lab_html
from amt.ledger import Ledger
from amt.responses import (RESPONSES_SCHEMA, STUDY_ERRORS_SCHEMA, answer_rows, as_table, merge_responses, read_parquet,
                           responses_lock, write_parquet)

STIMULUS = re.compile(r"^/stimuli/([0-9a-f]{32}\.png)$")
PAGE = re.compile(r"^/p/([A-Za-z0-9_-]{16,64})(?:/hit/(\d+))?/?$")
DONE = re.compile(r"^/p/([A-Za-z0-9_-]{16,64})/done/?$")


class LabServer:
    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.folder = Path(folder)
        self.ledger = Ledger.load(self.folder)
        self.study = self.ledger.study_definition()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep participants' tokens out of the console
                pass

            def do_GET(self):
                server.get(self)

            def do_POST(self):
                server.post(self)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_participants(self, count: int) -> list[str]:
        """New participant links (tokens are stored in the ledger)."""
        tokens = self.ledger.data.setdefault("lab_tokens", [])
        new = [secrets.token_urlsafe(18) for _ in range(count)]
        with self.lock:
            tokens.extend(new)
            self.ledger.save()
        return [f"{self.address}/p/{token}" for token in new]

    def start(self) -> "LabServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- request handling ----------------------------------------------------------------------
    def _send(self, handler, status: int, body: bytes = b"", content_type: str = "text/html; charset=utf-8",
              location: str | None = None) -> None:
        handler.send_response(status)
        if location:
            handler.send_header("Location", location)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def _assignment_prefix(token: str) -> str:
        """Responses name lab assignments by a hash of the link token, never the token itself."""
        return f"lab-{hashlib.sha256(token.encode()).hexdigest()[:12]}-"

    def _answered_hits(self, token: str) -> set[int]:
        responses = read_parquet(self.folder / "responses.parquet", RESPONSES_SCHEMA)
        prefix = self._assignment_prefix(token)
        return {int(a.rsplit("-", 1)[1]) for a in responses["assignment_id"] if a.startswith(prefix)}

    def _valid(self, token: str) -> bool:
        return token in self.ledger.data.get("lab_tokens", [])

    def get(self, handler) -> None:
        path = handler.path.split("?", 1)[0]
        stimulus = STIMULUS.match(path)
        if stimulus:
            file = self.folder / "stimuli" / stimulus.group(1)
            if file.is_file():
                return self._send(handler, HTTPStatus.OK, file.read_bytes(), "image/png")
            return self._send(handler, HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        done = DONE.match(path)
        if done and self._valid(done.group(1)):
            return self._send(handler, HTTPStatus.OK, b"<!DOCTYPE html><html><body><h1 id='done'>Thank you!</h1>"
                                                      b"<p>All your answers are saved.</p></body></html>")
        page = PAGE.match(path)
        if not page or not self._valid(page.group(1)):
            return self._send(handler, HTTPStatus.FORBIDDEN, b"unknown participant link", "text/plain")
        token = page.group(1)
        with self.lock:
            answered = self._answered_hits(token)
        remaining = [h["index"] for h in self.ledger.hits if h["index"] not in answered]
        if not remaining:
            return self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}/done")
        index = int(page.group(2)) if page.group(2) is not None else remaining[0]
        if index not in remaining:
            return self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}/hit/{remaining[0]}")
        items = self.ledger.items_of_hit(index)
        body = lab_html(self.study, items, lambda name: f"/stimuli/{name}", action=f"/p/{token}/hit/{index}",
                        progress=f"Page {len(answered) + 1} of {len(self.ledger.hits)}")
        self._send(handler, HTTPStatus.OK, body.encode())

    def post(self, handler) -> None:
        page = PAGE.match(handler.path)
        if not page or page.group(2) is None or not self._valid(page.group(1)):
            return self._send(handler, HTTPStatus.FORBIDDEN, b"unknown participant link", "text/plain")
        token, index = page.group(1), int(page.group(2))
        if index not in {h["index"] for h in self.ledger.hits}:
            return self._send(handler, HTTPStatus.NOT_FOUND, b"no such page", "text/plain")
        length = int(handler.headers.get("Content-Length", "0"))
        form = parse_qs(handler.rfile.read(length).decode("utf-8", "replace"))
        answers = {key: values[0] for key, values in form.items()}
        with self.lock, responses_lock(self.folder):
            rows, problems = answer_rows(self.ledger, index, answers, source="lab",
                                         assignment_id=f"{self._assignment_prefix(token)}{index}", worker_id=f"lab:{token}", hit_id=None)
            if problems:  # the browser enforces `required`; a hand-made post gets the page again
                return self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}/hit/{index}")
            responses = read_parquet(self.folder / "responses.parquet", RESPONSES_SCHEMA)
            responses, duplicates = merge_responses(responses, rows)
            write_parquet(self.folder / "responses.parquet", responses, RESPONSES_SCHEMA)
            if duplicates:
                errors = read_parquet(self.folder / "errors.parquet", STUDY_ERRORS_SCHEMA)
                import pandas as pd

                write_parquet(self.folder / "errors.parquet",
                              pd.concat([errors, as_table(duplicates, STUDY_ERRORS_SCHEMA)], ignore_index=True),
                              STUDY_ERRORS_SCHEMA)
        self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}")
