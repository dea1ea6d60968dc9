"""A small HTTP server on 127.0.0.1 for tests: in-memory files, and a connection dropped half-way on request.

    with FileServer({"/data.zip": payload}) as server:
        server.script("/data.zip", "drop_half")   # the next request only; then "ok" again
        download(server.url("/data.zip"), dest)

Behaviours, consumed one per request to that path (join several with "+"):

* ``"ok"``            the file with its Content-Length and a Last-Modified (when it was added);
* ``"drop_half"``     the headers with the full Content-Length, half the body, then the connection closed;
* ``"no_validators"`` no Last-Modified.

Paths without a file answer 404. Only the standard library is used, and no package-relative imports,
so this file can be imported as ``http_server`` with ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: Message


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.requests.append(RecordedRequest(self.command, path, self.headers))
            queue = owner.behaviours.get(path)
            tokens = (queue.popleft() if queue else "ok").split("+")
        content = owner.files.get(path)
        if content is None:
            body = b"404 Not Found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        if "no_validators" not in tokens:
            self.send_header("Last-Modified", formatdate(owner.modified.get(path, owner.started), usegmt=True))
        self.end_headers()
        if "drop_half" in tokens:
            self.wfile.write(content[: len(content) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(content)


class FileServer:
    """Serve ``files`` (path -> bytes) on 127.0.0.1 at a free port; use it in a ``with`` block."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files: dict[str, bytes] = dict(files or {})
        self.started = time.time() - 3600  # Last-Modified of the files given here
        self.modified: dict[str, float] = {}  # ... and of those added later
        self.requests: list[RecordedRequest] = []
        self.behaviours: dict[str, deque[str]] = {}
        self.lock = threading.Lock()

    def add_file(self, path: str, content: bytes) -> None:
        """Serve ``content`` at ``path``, as a new version (a later Last-Modified)."""
        self.files[path] = content
        self.modified[path] = max(time.time(), self.modified.get(path, self.started) + 1)

    def script(self, path: str, *behaviours: str) -> None:
        """Queue behaviours for the next requests to ``path``, one per request."""
        with self.lock:
            self.behaviours.setdefault(path, deque()).extend(behaviours)

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> FileServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
