"""A small HTTP server on 127.0.0.1 for tests: in-memory files, Range requests, scripted failures.

    with FileServer({"/data.zip": payload}) as server:
        server.script("/data.zip", "drop_half", "status:503")   # then "ok" for every later request
        download_file(server.url("/data.zip"), dest)
        assert server.requests[1].headers["Range"] == "bytes=...-"

Behaviours, consumed one per request to that path (an empty queue means "ok"); join several
with "+", e.g. ``"drop_half+no_validators"``:

* ``"ok"``            serve the file with an ``ETag`` (from its bytes) and a ``Last-Modified``
                      (when it was added), honouring ``Range: bytes=N-`` / ``bytes=N-M`` with a
                      206, unless an ``If-Range`` names neither (then 200 and the whole file);
* ``"status:NNN"``    answer with that status code and a short text body;
* ``"drop_half"``     send the headers with the full Content-Length, write half the body,
                      then close the connection abruptly;
* ``"ignore_range"``  answer 200 with the whole file even when a Range is asked;
* ``"no_length"``     send the whole file without a Content-Length header;
* ``"delay:SECONDS"`` wait that long before answering (to trigger read time-outs);
* ``"no_validators"`` send neither ``ETag`` nor ``Last-Modified``;
* ``"no_etag"``       send ``Last-Modified`` only;  ``"weak_etag"``: a weak ``W/"..."`` ETag only;
* ``"overlong"``      announce half the size in ``Content-Length`` but send the whole body
                      (chunked): a response that lies about its size;
* ``"endless"``       no Content-Length, and bytes until the client hangs up (at most 64 MiB
                      or 30 s);
* ``"slow:N"``        send the first N bytes at once, then 1 kB every 50 ms (at most 60 s).

To serve a new version, call ``add_file`` again: its ETag and Last-Modified change with it
(assigning ``files[path]`` changes the ETag only).

Paths without a file answer 404. Only the standard library is used, and there are no
package-relative imports, so this file can be imported as ``tests.http_server`` or, with
``tests/`` on ``sys.path``, as ``http_server``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FileServer", "RecordedRequest"]


@dataclass
class RecordedRequest:
    """One request as the server saw it. ``headers`` looks names up case-insensitively."""

    method: str
    path: str
    headers: Message
    behaviour: str


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_GET(self):
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        behaviour = owner._next_behaviour(path)
        owner._record(RecordedRequest(self.command, path, self.headers, behaviour))
        tokens = behaviour.split("+")  # e.g. "drop_half+no_validators"
        given = {t.split(":", 1)[0]: t.split(":", 1)[1] for t in tokens if ":" in t}

        if "delay" in given:
            time.sleep(float(given["delay"]))
        if "status" in given:
            return self._send_status(int(given["status"]), send_body)
        content = owner.files.get(path)
        if content is None:
            return self._send_status(404, send_body)

        etag = FileServer.etag(content)
        modified = formatdate(owner.modified.get(path, owner.started), usegmt=True)
        sent = {"ETag": etag, "Last-Modified": modified}
        if "no_validators" in tokens or "weak_etag" in tokens:
            sent = {"ETag": "W/" + etag} if "weak_etag" in tokens else {}
        elif "no_etag" in tokens:
            sent = {"Last-Modified": modified}
        status, start, end = 200, 0, len(content)
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, modified):
            range_header = None  # the file changed: send all of it (RFC 9110 13.1.5)
        if range_header and "ignore_range" not in tokens:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if match:
                start = int(match.group(1))
                if start >= len(content):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(content)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if match.group(2):
                    end = min(int(match.group(2)) + 1, len(content))
                status = 206
        body = content[start:end]

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        for name, value in sent.items():
            self.send_header(name, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(content)}")
        if "overlong" in tokens:
            self.send_header("Content-Length", str(len(body) // 2))
            self.send_header("Transfer-Encoding", "chunked")
        elif "no_length" not in tokens and "endless" not in tokens:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not send_body:
            return
        if "overlong" in tokens or "endless" in tokens or "slow" in given:
            return self._stream(tokens, given, body)
        if "drop_half" in tokens:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def _stream(self, tokens: list[str], given: dict[str, str], body: bytes) -> None:
        """The bodies sent piece by piece: "overlong" (chunked), "endless" and "slow:N"."""
        self.close_connection = True
        try:
            if "overlong" in tokens:
                for i in range(0, len(body), 8192):
                    piece = body[i : i + 8192]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif "endless" in tokens:
                deadline, block = time.monotonic() + 30, b"\0" * 65536
                for _ in range(1024):  # 64 MiB at most
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(block)
            else:
                fast = int(given["slow"])
                self.wfile.write(body[:fast])
                deadline = time.monotonic() + 60
                for i in range(fast, len(body), 1024):
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(body[i : i + 1024])
                    self.wfile.flush()
                    time.sleep(0.05)
            self.wfile.flush()
        except OSError:
            pass  # the client hung up: expected

    def _send_status(self, code: int, send_body: bool) -> None:
        body = f"{code} {self.responses.get(code, ('',))[0]}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "FileServer"

    def handle_error(self, request, client_address):
        pass  # a client that hung up early (time-out tests) is expected, not an error


class FileServer:
    """Serve ``files`` (path -> bytes) on 127.0.0.1 at a free port; use it in a ``with`` block."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files: dict[str, bytes] = dict(files or {})
        self.started = time.time() - 3600  # Last-Modified of the files given here
        self.modified: dict[str, float] = {}  # ... and of those added later
        self.requests: list[RecordedRequest] = []
        self._behaviours: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def etag(content: bytes) -> str:
        """The strong ETag this server sends for ``content``."""
        return '"' + hashlib.sha256(content).hexdigest()[:16] + '"'

    def add_file(self, path: str, content: bytes, *behaviours: str) -> None:
        """Serve ``content`` at ``path``, optionally with scripted behaviours."""
        self.files[path] = content
        self.modified[path] = max(time.time(), self.modified.get(path, self.started) + 1)
        self.script(path, *behaviours)

    def script(self, path: str, *behaviours: str) -> None:
        """Queue behaviours for the next requests to ``path``, one per request."""
        with self._lock:
            self._behaviours.setdefault(path, deque()).extend(behaviours)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """The requests received so far for ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running; use it in a `with` block")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> "FileServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _next_behaviour(self, path: str) -> str:
        with self._lock:
            queue = self._behaviours.get(path)
            return queue.popleft() if queue else "ok"

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
