"""`eml study serve`: the study's HIT pages on 127.0.0.1 for in-lab participants and pilots.

Each participant gets a link with a secret token (``/p/<token>``); the token
plays the worker id (hashed with the study salt like MTurk ids). The server
walks the participant through every HIT of the study, writes each submission
into the same ``responses.parquet`` as MTurk collection (``source = lab``), so
the analysis is identical, and thanks them at the end. Only stimulus files
(content-hash names) and pages are served; nothing else from the study folder.

Whoever can reach the port is untrusted, so every request is bounded:

* ``Host`` must name the bound address (``127.0.0.1:PORT`` or ``localhost:PORT``),
  else 421 (400 when absent or repeated): a web page on another site cannot
  reach the server through DNS rebinding;
* a POST body is at most :data:`MAX_BODY_BYTES` (64 KB; 413 before reading a
  byte of it); ``Content-Length`` must be one decimal number (400; 411 when
  absent); ``Transfer-Encoding`` is refused (400);
* each connection's socket has a timeout (:data:`REQUEST_TIMEOUT_SECONDS`), so a
  client that announces more bytes than it sends, or sends nothing, cannot hold a
  handler thread;
* a form carries at most 64 fields; page numbers are at most 6 digits.

Participant tokens are added under the study lock (:func:`add_lab_tokens`), and
answers are written under the same lock as MTurk collection.

**Time spent.** The server notes when it first served each page to each participant; the answer row's
``accept_time`` is that moment and ``submit_time`` the moment the answers arrived, so ``work_seconds`` is the
time spent on the page (null when the server was restarted in between: it never guesses).

**Status page.** ``/status/<secret>`` (:attr:`LabServer.status_url`, printed by ``eml study serve``; a new
secret per start, never stored) lists each participant link by the hash that names it in the responses:
pages answered, answers, last answer, time spent. It shows no answers and no participant tokens.
"""

from __future__ import annotations

import errno
import html
import os
import re
import secrets
import sys
import threading
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pandas as pd

from amt.hit_page import lab_html
from amt.ledger import LEDGER_FILE, Ledger, study_lock
from amt.responses import answer_rows, merge_responses, read_study_table, write_study_table
from amt.status import lab_participant, lab_progress
from amt.study import StudyError
from eml_core.tables import frame

STIMULUS = re.compile(r"^/stimuli/([0-9a-f]{32}\.png)$")
PAGE = re.compile(r"^/p/([A-Za-z0-9_-]{16,64})(?:/hit/(\d{1,6}))?/?$")
DONE = re.compile(r"^/p/([A-Za-z0-9_-]{16,64})/done/?$")
STATUS = re.compile(r"^/status/([A-Za-z0-9_-]{16,64})/?$")
CONTENT_LENGTH = re.compile(r"^[0-9]{1,15}$")
MAX_BODY_BYTES = 64 * 1024          # a page of answers is a few hundred bytes
MAX_FORM_FIELDS = 64
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_PARTICIPANTS = 1000


def add_lab_tokens(folder: str | Path, count: int) -> list[str]:
    """``count`` new secret participant tokens, stored in the ledger (read-modify-write under the study lock)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_PARTICIPANTS:
        raise StudyError(f"participants: {count!r} is not a number of participants in 0..{MAX_PARTICIPANTS}")
    new = [secrets.token_urlsafe(18) for _ in range(count)]
    with Ledger.update(folder) as ledger:
        ledger.data.setdefault("lab_tokens", []).extend(new)
    return new


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, lab: "LabServer"):
        self.lab = lab
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        """A client that vanished mid-answer is normal; anything else is noted in one line (no traceback)."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        self.lab.request_errors.append(f"{type(error).__name__}: {error}")
        print(f"lab server: a request failed: {type(error).__name__}: {error}", file=sys.stderr)


class LabServer:
    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0,
                 request_timeout: float = REQUEST_TIMEOUT_SECONDS):
        self.folder = Path(folder)
        self.ledger = Ledger.load(self.folder)
        self.study = self.ledger.study_definition()
        self.request_errors: list[str] = []
        self._tokens = set(self.ledger.data.get("lab_tokens", []))
        self._ledger_stamp = self._stamp()
        self._tokens_lock = threading.Lock()
        self._served: dict[tuple[str, int], str] = {}   # (token, page) -> when it was first served (UTC, ISO)
        self.status_token = secrets.token_urlsafe(18)
        lab = self

        class Handler(BaseHTTPRequestHandler):
            timeout = request_timeout  # socket timeout of every connection (StreamRequestHandler applies it)

            def log_message(self, *args):  # keep participants' tokens out of the console
                pass

            def do_GET(self):
                lab.dispatch(self, lab.get)

            def do_POST(self):
                lab.dispatch(self, lab.post)

        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise StudyError(f"port: {port!r} is not a TCP port (0..65535)")
        try:
            self.httpd = _Server((host, port), Handler, self)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise StudyError(f"port {port} on {host} is in use (another server?); pick another with --port") \
                    from None
            raise StudyError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
        bound_host, bound_port = self._bound()
        self.allowed_hosts = {f"{bound_host}:{bound_port}".lower(), f"localhost:{bound_port}"}
        self.thread: threading.Thread | None = None

    def _bound(self) -> tuple[str, int]:
        """The host and port the server listens on (a TCP server: text and a number)."""
        host, port = self.httpd.server_address[:2]
        return (bytes(host).decode() if isinstance(host, (bytes, bytearray)) else host), int(port)

    @property
    def address(self) -> str:
        host, port = self._bound()
        return f"http://{host}:{port}"

    @property
    def status_url(self) -> str:
        """The progress page of this server run (its secret changes at every start)."""
        return f"{self.address}/status/{self.status_token}"

    def status_page(self) -> str:
        ledger = Ledger.load(self.folder)  # participants another server added count too
        return status_html(ledger.study_id, lab_progress(ledger, read_study_table(self.folder, "responses")))

    def add_participants(self, count: int) -> list[str]:
        """New participant links (tokens are stored in the ledger)."""
        new = add_lab_tokens(self.folder, count)
        with self._tokens_lock:
            self._tokens.update(new)
        return [f"{self.address}/p/{token}" for token in new]

    def start(self) -> "LabServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
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
        handler.send_header("X-Content-Type-Options", "nosniff")
        if status >= 400:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(body)

    def _refuse(self, handler, status: HTTPStatus, text: str) -> None:
        self._send(handler, status, text.encode(), "text/plain; charset=utf-8")

    def dispatch(self, handler, method) -> None:
        """Host check, then the method; a study-folder problem answers 500 in one line."""
        hosts = handler.headers.get_all("Host") or []
        if len(hosts) != 1:
            return self._refuse(handler, HTTPStatus.BAD_REQUEST, "exactly one Host header is required")
        if hosts[0].strip().lower() not in self.allowed_hosts:
            return self._refuse(handler, HTTPStatus.MISDIRECTED_REQUEST, "this server answers only to "
                                + " or ".join(sorted(self.allowed_hosts)))
        try:
            method(handler)
        except StudyError as error:
            self.request_errors.append(str(error))
            self._refuse(handler, HTTPStatus.INTERNAL_SERVER_ERROR, "the study folder has a problem; see the console")
            print(f"lab server: {error}", file=sys.stderr)

    @staticmethod
    def _assignment_prefix(token: str) -> str:
        """Responses name lab assignments by a hash of the link token, never the token itself."""
        return f"{lab_participant(token)}-"

    def _answered_hits(self, token: str) -> set[int]:
        responses = read_study_table(self.folder, "responses")
        prefix = self._assignment_prefix(token)
        return {int(a.rsplit("-", 1)[1]) for a in responses["assignment_id"] if a.startswith(prefix)}

    def _stamp(self):
        try:
            return os.stat(self.folder / LEDGER_FILE).st_mtime_ns
        except OSError:
            return None

    def _valid(self, token: str) -> bool:
        """A known token; tokens another process added (a second `eml study serve`) are read when the ledger
        file changed since the last look."""
        with self._tokens_lock:
            if token in self._tokens:
                return True
            stamp = self._stamp()
            if stamp != self._ledger_stamp:
                self._ledger_stamp = stamp
                self._tokens = set(Ledger.load(self.folder).data.get("lab_tokens", []))
            return token in self._tokens

    def get(self, handler) -> None:
        path = handler.path.split("?", 1)[0]
        stimulus = STIMULUS.match(path)
        if stimulus:
            file = self.folder / "stimuli" / stimulus.group(1)
            if file.is_file():
                return self._send(handler, HTTPStatus.OK, file.read_bytes(), "image/png")
            return self._refuse(handler, HTTPStatus.NOT_FOUND, "not found")
        status = STATUS.match(path)
        if status:
            if not secrets.compare_digest(status.group(1), self.status_token):
                return self._refuse(handler, HTTPStatus.FORBIDDEN, "unknown status link")
            return self._send(handler, HTTPStatus.OK, self.status_page().encode())
        done = DONE.match(path)
        if done and self._valid(done.group(1)):
            return self._send(handler, HTTPStatus.OK, b"<!DOCTYPE html><html><body><h1 id='done'>Thank you!</h1>"
                                                      b"<p>All your answers are saved.</p></body></html>")
        page = PAGE.match(path)
        if not page or not self._valid(page.group(1)):
            return self._refuse(handler, HTTPStatus.FORBIDDEN, "unknown participant link")
        token = page.group(1)
        answered = self._answered_hits(token)
        remaining = [h["index"] for h in self.ledger.hits if h["index"] not in answered]
        if not remaining:
            return self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}/done")
        index = int(page.group(2)) if page.group(2) is not None else remaining[0]
        if index not in remaining:
            return self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}/hit/{remaining[0]}")
        with self._tokens_lock:
            self._served.setdefault((token, index), _now())
        items = self.ledger.items_of_hit(index)
        body = lab_html(self.study, items, lambda name: f"/stimuli/{name}", action=f"/p/{token}/hit/{index}",
                        progress=f"Page {len(answered) + 1} of {len(self.ledger.hits)}")
        self._send(handler, HTTPStatus.OK, body.encode())

    def _read_body(self, handler) -> bytes | None:
        """The request body within the limits, or None after answering the client's mistake."""
        if handler.headers.get_all("Transfer-Encoding"):
            self._refuse(handler, HTTPStatus.BAD_REQUEST, "Transfer-Encoding is not accepted; send Content-Length")
            return None
        lengths = handler.headers.get_all("Content-Length") or []
        if not lengths:
            self._refuse(handler, HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return None
        if len(lengths) != 1 or not CONTENT_LENGTH.match(lengths[0].strip(" \t")):  # HTTP whitespace only
            self._refuse(handler, HTTPStatus.BAD_REQUEST, "Content-Length must be one non-negative whole number")
            return None
        length = int(lengths[0].strip(" \t"))
        if length > MAX_BODY_BYTES:  # answered before reading any of it; the connection is then closed
            self._refuse(handler, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY_BYTES} bytes")
            return None
        body = handler.rfile.read(length)  # bounded in time by the socket timeout
        if len(body) != length:
            handler.close_connection = True  # the client went away before sending what it announced
            return None
        return body

    def post(self, handler) -> None:
        page = PAGE.match(handler.path)
        if not page or page.group(2) is None or not self._valid(page.group(1)):
            return self._refuse(handler, HTTPStatus.FORBIDDEN, "unknown participant link")
        token, index = page.group(1), int(page.group(2))
        if index not in {h["index"] for h in self.ledger.hits}:
            return self._refuse(handler, HTTPStatus.NOT_FOUND, "no such page")
        body = self._read_body(handler)
        if body is None:
            return
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            return self._refuse(handler, HTTPStatus.BAD_REQUEST, f"at most {MAX_FORM_FIELDS} form fields")
        answers = {key: values[0] for key, values in form.items()}
        with study_lock(self.folder):  # the same lock as MTurk collection and every ledger writer
            with self._tokens_lock:
                served = self._served.get((token, index))
            rows, problems = answer_rows(self.ledger, index, answers, source="lab",
                                         assignment_id=f"{self._assignment_prefix(token)}{index}",
                                         worker_id=f"lab:{token}", hit_id=None, accept_time=served,
                                         submit_time=_now() if served else None)
            if problems:  # the browser enforces `required`; a hand-made post gets the page again
                return self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}/hit/{index}")
            responses = read_study_table(self.folder, "responses")
            responses, duplicates = merge_responses(responses, rows)
            write_study_table(self.folder, "responses", responses)
            if duplicates:
                errors = read_study_table(self.folder, "errors")
                write_study_table(self.folder, "errors", pd.concat([errors, frame("errors", duplicates)],
                                                                   ignore_index=True))
        self._send(handler, HTTPStatus.SEE_OTHER, location=f"/p/{token}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}"
    return html.escape(str(value))


def status_html(study_id: str, progress: pd.DataFrame) -> str:
    """The lab status page: one row per participant link (named by its hash), no answers."""
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in progress.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in progress.itertuples(index=False))
    done = int(progress["done"].sum()) if len(progress) else 0
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">'
            f"<title>{html.escape(study_id)}: lab status</title></head><body>"
            f"<h1>{html.escape(study_id)}: lab participants</h1>"
            f'<p id="summary">{done} of {len(progress)} participants done</p>'
            f'<table id="participants" border="1" cellpadding="4"><tr>{head}</tr>{body}</table>'
            f"</body></html>")
