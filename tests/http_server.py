"""A small HTTP server on 127.0.0.1 for tests: in-memory files, Range requests, scripted failures.

    with FileServer({"/data.zip": payload}) as server:
        server.script("/data.zip", "drop_half", "status:503")   # then "ok" for every later request
        download_file(server.url("/data.zip"), dest)
        assert server.requests[1].headers["Range"] == "bytes=...-"

Behaviours, consumed one per request to that path (an empty queue means "ok"):

* ``"ok"``            serve the file, honouring ``Range: bytes=N-`` / ``bytes=N-M`` with a 206;
* ``"status:NNN"``    answer with that status code and a short text body;
* ``"drop_half"``     send the headers with the full Content-Length, write half the body,
                      then close the connection abruptly;
* ``"ignore_range"``  answer 200 with the whole file even when a Range is asked;
* ``"no_length"``     send the whole file without a Content-Length header;
* ``"delay:SECONDS"`` wait that long before answering (to trigger read time-outs).

Paths without a file answer 404. Only the standard library is used, and there are no
package-relative imports, so this file can be imported as ``tests.http_server`` or, with
``tests/`` on ``sys.path``, as ``http_server``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.message import Message
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

        if behaviour.startswith("delay:"):
            time.sleep(float(behaviour.split(":", 1)[1]))
            behaviour = "ok"
        if behaviour.startswith("status:"):
            return self._send_status(int(behaviour.split(":", 1)[1]), send_body)
        content = owner.files.get(path)
        if content is None:
            return self._send_status(404, send_body)

        status, start, end = 200, 0, len(content)
        range_header = self.headers.get("Range")
        if range_header and behaviour != "ignore_range":
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
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(content)}")
        if behaviour != "no_length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not send_body:
            return
        if behaviour == "drop_half":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

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
        self.requests: list[RecordedRequest] = []
        self._behaviours: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def add_file(self, path: str, content: bytes, *behaviours: str) -> None:
        """Serve ``content`` at ``path``, optionally with scripted behaviours."""
        self.files[path] = content
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
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
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
