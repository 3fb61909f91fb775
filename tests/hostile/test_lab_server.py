"""The lab server against hostile clients: a real server on 127.0.0.1, raw sockets for what browsers never send.

Each case is recorded through the harness as ``handled`` once the server's answer (or its closing the
connection) is the refusal expected; at the end, no request may have failed inside the server.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlencode

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amt.lab import MAX_BODY_BYTES, LabServer
from amt.ledger import Ledger
from tests.amt.helpers import make_ledger
from tests.hostile.harness import record, run_cli

TIMEOUT = 0.5  # the server's socket timeout in these tests
# where a test shows that something happens BEFORE the timeout (a refusal from the headers alone, a page served
# while other connections hang), a timeout long enough that a loaded CI machine cannot blur the two
PATIENT_TIMEOUT = 4.0


def _lab_server(tmp_path_factory, request_timeout: float):
    folder = make_ledger(tmp_path_factory.mktemp("lab") / "study")
    server = LabServer(folder, request_timeout=request_timeout).start()
    (link,) = server.add_participants(1)
    server.token = link.rsplit("/", 1)[1]
    server.port = server.httpd.server_address[1]
    yield server
    server.stop()
    assert server.request_errors == [], server.request_errors  # every hostile request was refused cleanly


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from _lab_server(tmp_path_factory, TIMEOUT)


@pytest.fixture(scope="module")
def patient_lab(tmp_path_factory):
    yield from _lab_server(tmp_path_factory, PATIENT_TIMEOUT)


def _exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[int | None, bytes, float]:
    """Send raw bytes, read until the server closes; (status or None when it closed without answering,
    the answer, seconds until closed)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        try:
            connection.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    return status, answer, time.monotonic() - start


def _post(lab, headers: dict | list, body: bytes = b"", path: str | None = None) -> bytes:
    """A raw POST. Refused requests are sent without their body: a server closing a socket with unread bytes
    resets the connection, and the client could lose the answer it is checking."""
    path = path or f"/p/{lab.token}/hit/0"
    items = [*(headers.items() if isinstance(headers, dict) else headers), ("Connection", "close")]
    head = "".join(f"{k}: {v}\r\n" for k, v in items)
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


def _get(lab, path: str, host: str | None = None) -> bytes:
    host = _host(lab) if host is None else host
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def _host(lab) -> str:
    return f"127.0.0.1:{lab.port}"


def _case(lab, name: str, data: bytes, expected: set, closes_within: float | None = None):
    status, answer, seconds = _exchange(lab.port, data)
    assert status in expected, (name, status, answer[:200])
    if closes_within is not None:
        assert seconds < closes_within, (name, seconds)
    record("lab server", name, "handled")
    return answer


def test_a_150_mb_body_is_refused_without_reading_it(patient_lab):
    lab = patient_lab
    before = _answers(lab)
    head = _post(lab, {"Host": _host(lab), "Content-Length": str(150 * 2**20)})
    answer = _case(lab, "Content-Length 150 MB, no body sent", head, {413}, closes_within=PATIENT_TIMEOUT)
    assert b"at most 65536 bytes" in answer
    with socket.create_connection(("127.0.0.1", lab.port), timeout=5) as connection:  # then sends the body
        connection.sendall(head)
        assert connection.recv(12) == b"HTTP/1.0 413"
        try:
            for _ in range(64):
                connection.sendall(b"q0=2&" * 20_000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection without reading
        else:
            pytest.fail("the server kept reading a body it had refused")
    record("lab server", "Content-Length 150 MB, body streamed after the 413", "handled")
    _case(lab, f"Content-Length {MAX_BODY_BYTES + 1}", _post(lab, {"Host": _host(lab), "Content-Length":
                                                                    str(MAX_BODY_BYTES + 1)}), {413})
    assert _answers(lab) == before


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "5, 5", "\uff10", "+5", "0x10", "", " ", "5.0",
                                   "99999999999999999999", "\u0665"])
def test_malformed_content_length_is_a_400(lab, value):
    _case(lab, f"Content-Length {value!r}", _post(lab, {"Host": _host(lab), "Content-Length": value}), {400})


def test_framing_refusals(lab):
    host = _host(lab)
    _case(lab, "two Content-Length headers", _post(lab, [("Host", host), ("Content-Length", "4"),
                                                          ("Content-Length", "40")]), {400})
    _case(lab, "no Content-Length", _post(lab, {"Host": host}), {411})
    _case(lab, "Transfer-Encoding chunked", _post(lab, {"Host": host, "Transfer-Encoding": "chunked"}), {400})
    _case(lab, "chunked and Content-Length (smuggling)", _post(lab, {"Host": host, "Content-Length": "4",
                                                                     "Transfer-Encoding": "chunked"}), {400})


def test_slow_and_silent_clients_cannot_hold_a_handler(patient_lab):
    """A body shorter than announced, a request that never ends, a silent connection: each is dropped after
    the socket timeout, while other clients are served meanwhile (before that timeout)."""
    lab = patient_lab
    host = _host(lab)
    cases = {
        "Content-Length 100, 10 bytes sent": _post(lab, {"Host": host, "Content-Length": "100"}, b"q0=2&q1=1&"),
        "headers never finished": f"POST /p/{lab.token}/hit/0 HTTP/1.1\r\nHost: {host}\r\n".encode(),
        "request line never finished": b"GET /p/",
        "nothing sent": b"",
    }
    slow = []
    for name, data in cases.items():
        connection = socket.create_connection(("127.0.0.1", lab.port), timeout=10)
        connection.sendall(data)
        slow.append((name, connection, time.monotonic()))
    idle = [socket.create_connection(("127.0.0.1", lab.port), timeout=10) for _ in range(20)]
    status, _, seconds = _exchange(lab.port, _get(lab, f"/p/{lab.token}"))
    assert status == 200 and seconds < PATIENT_TIMEOUT  # served while 24 connections hang
    for name, connection, started in slow:
        with connection:
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
            waited = time.monotonic() - started
        assert waited < PATIENT_TIMEOUT + 3, (name, waited)  # closed by the server, not by the test's own timeout
        assert not answer.startswith(b"HTTP/1.0 2") and not answer.startswith(b"HTTP/1.1 2"), name
        record("lab server", name, "handled")
    for connection in idle:
        connection.close()
    record("lab server", "20 idle connections while a page is served", "handled")


def test_host_header_must_name_the_bound_address(lab):
    page = f"/p/{lab.token}"
    for name, host, expected in [
        ("Host of another site (DNS rebinding)", "evil.example", 421),
        ("Host of another site with our port", f"evil.example:{lab.port}", 421),
        ("Host 127.0.0.1 on another port", f"127.0.0.1:{lab.port + 1}", 421),
        ("Host without the port", "127.0.0.1", 421),
        ("Host 0.0.0.0", f"0.0.0.0:{lab.port}", 421),
        ("Host with a user part", f"user@127.0.0.1:{lab.port}", 421),
        ("Host localhost (allowed)", f"localhost:{lab.port}", 200),
        ("Host LOCALHOST upper case (allowed)", f"LOCALHOST:{lab.port}", 200),
        ("Host 127.0.0.1 (allowed)", f"127.0.0.1:{lab.port}", 200),
    ]:
        answer = _case(lab, name, _get(lab, page, host), {expected})
        if expected == 421:
            assert b"Robot A" not in answer  # no page content leaks to a rebinding site
    _case(lab, "no Host header (HTTP/1.0)", f"GET {page} HTTP/1.0\r\n\r\n".encode(), {400})
    _case(lab, "two Host headers", f"GET {page} HTTP/1.1\r\nHost: {_host(lab)}\r\nHost: evil.example\r\n\r\n"
          .encode(), {400})
    _case(lab, "POST with a foreign Host", _post(lab, {"Host": "evil.example", "Content-Length": "4"}), {421})


def test_hostile_paths_and_forms(lab):
    host = _host(lab)
    _case(lab, "page number of 11 digits", _get(lab, f"/p/{lab.token}/hit/99999999999"), {403})
    _case(lab, "page number of 5000 digits", _get(lab, f"/p/{lab.token}/hit/{'9' * 5000}"), {403})
    _case(lab, "request line over 64 KB", b"GET /p/" + b"a" * (65537 - 7), {414})  # nothing left unread
    _case(lab, "path traversal to the ledger", _get(lab, "/stimuli/../ledger.json"), {403})
    _case(lab, "encoded traversal", _get(lab, "/stimuli/%2e%2e/ledger.json"), {403})
    _case(lab, "a token that is not in the ledger", _get(lab, "/p/" + "A" * 24), {403})
    _case(lab, "POST to a page that does not exist", _post(lab, {"Host": host, "Content-Length": "4"},
                                                         path=f"/p/{lab.token}/hit/999"), {404})
    before = _answers(lab)
    many = urlencode({f"f{n}": "1" for n in range(100)}).encode()
    _case(lab, "100 form fields", _post(lab, {"Host": host, "Content-Length": str(len(many))}, many), {400})
    junk = b"q0=\xff\xfe&q1=%ff%00"
    _case(lab, "non-UTF-8 answers", _post(lab, {"Host": host, "Content-Length": str(len(junk))}, junk), {303})
    wrong = b"q0=7&q1=2"
    _case(lab, "answer values out of range", _post(lab, {"Host": host, "Content-Length": str(len(wrong))}, wrong),
          {303})
    assert _answers(lab) == before  # nothing malformed was stored


def _answers(lab) -> int:
    path = lab.folder / "responses.parquet"
    return len(pd.read_parquet(path)) if path.exists() else 0


def test_a_real_submission_still_works(lab):
    items = Ledger.load(lab.folder).items_of_hit(1)
    body = urlencode({f"q{i['position']}": "1" for i in items}).encode()
    _case(lab, "a well-formed submission (control)", _post(lab, {"Host": _host(lab), "Content-Length":
                                                                 str(len(body))}, body, f"/p/{lab.token}/hit/1"),
          {303})
    assert _answers(lab) == len(items)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=24))
def test_random_content_length_values(lab, value):
    """A valid length up to 10 gets that many body bytes (fields of no item: never stored) and 303; a valid
    length the client never fills is dropped at the timeout; anything else is refused from the headers."""
    digits = value.strip(" \t")  # HTTP optional whitespace is space and tab only
    valid = digits.isascii() and digits.isdigit() and len(digits) <= 15
    length = int(digits) if valid else None
    body = b"q7=2&q8=1&"[:length] if valid and length <= 10 else b""
    status, _, seconds = _exchange(lab.port, _post(lab, {"Host": _host(lab), "Content-Length": value}, body))
    if not valid:
        expected = {400}
    else:
        expected = {413} if length > MAX_BODY_BYTES else {303} if length <= 10 else {None}
    assert status in expected, (value, status)
    assert seconds < TIMEOUT + 3
    record("lab server", f"Content-Length {value!r}", "handled")


def test_port_in_use_is_one_line_and_exit_2(lab, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["study", "serve", str(lab.folder), "--port", str(port)], entry_point="eml study serve",
                         case="port in use")
    assert f"port {port} on 127.0.0.1 is in use" in result.err
    result = run_cli(["study", "serve", str(lab.folder), "--port", str(lab.port)], entry_point="eml study serve",
                     case="port of a running lab server")
    assert "is in use" in result.err
