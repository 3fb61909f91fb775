"""A fault-injecting HTTP proxy in front of moto's S3 server (fault tests only, 127.0.0.1).

The results layer talks to S3 through pyarrow's S3 filesystem (the AWS C++ SDK), so faults are injected on
the wire, where any client meets them: the proxy forwards each request to moto unless ``choose(call number,
request)`` names a fault, in which case it answers as S3 does under load (503 SlowDown, 500 InternalError,
with S3's XML error body) or drops the connection without an answer.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

RESPONSES = {"SlowDown": 503, "InternalError": 500}  # error code -> HTTP status, as S3 sends them
CONNECTION_RESET = "connection reset"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # /bucket/key?query

    @property
    def operation(self) -> str:
        """The S3 operation, as far as the method and query say (enough to aim faults)."""
        query = urlparse(self.path).query
        if self.method == "PUT":
            return "UploadPart" if "partNumber=" in query else "PutObject"
        if self.method == "POST":
            return "CompleteMultipartUpload" if "uploadId=" in query else "CreateMultipartUpload"
        return {"GET": "GetObject" if "list-type" not in query else "ListObjects", "HEAD": "HeadObject",
                "DELETE": "DeleteObject"}.get(self.method, self.method)

    @property
    def key(self) -> str:
        return urlparse(self.path).path.lstrip("/").partition("/")[2]


class FaultProxy:
    """``with FaultProxy(upstream, choose) as proxy:`` then point the S3 client at ``proxy.url``."""

    def __init__(self, upstream: str, choose: Callable[[int, Request], str | None]):
        self.upstream = urlparse(upstream)
        self.choose = choose
        self.calls = 0
        self.injected: list[tuple[int, str, str, str]] = []  # (call number, operation, key, fault)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                request = Request(self.command, self.path)
                with proxy._lock:
                    proxy.calls += 1
                    call = proxy.calls
                    fault = proxy.choose(call, request)
                    if fault:
                        proxy.injected.append((call, request.operation, request.key, fault))
                if fault == CONNECTION_RESET:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault:
                    payload = b"" if self.command == "HEAD" else (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault}</Code><Message>injected "
                        f"fault</Message><RequestId>fault-{call}</RequestId></Error>").encode()
                    self.send_response(RESPONSES[fault])
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                            self.send_header(name, value)
                    # a HEAD's Content-Length is the object's size, not the (empty) body's
                    length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def counts(self) -> Counter:
        return Counter(fault for *_, fault in self.injected)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
