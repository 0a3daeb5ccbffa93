"""A loopback HTTP server that answers from a script and records what it was sent.

For the cases the sandbox deliberately does not produce (HTML error pages, bodies without an
access_token, odd token types) and for asserting the exact bytes of a request as a server sees
them. Real sockets, real requests: nothing in the client is patched.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds between bytes: when set, the whole answer (status line, headers, body) is dripped one
    # byte at a time, as a slow-loris server or a broken gateway would, until the client hangs up.
    drip: float = 0.0
    drip_body_only: bool = False  # send the status line and headers at once, then drip the body
    delay: float = 0.0  # seconds to hold the request before answering, as a busy server would

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), "text/html"
        return self.body or b"", "application/octet-stream"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the whole request had arrived


class ScriptedServer:
    """Replies are taken in order per path prefix; the last one repeats."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[Recorded] = []
        self.stopping = threading.Event()
        self.dripped_until_hangup = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                at = time.monotonic()
                server.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body, at)
                )
                reply = server._next(self.path)
                time.sleep(reply.delay)
                payload, content_type = reply.encoded()
                if reply.drip:
                    self._drip(reply, payload, content_type)
                    return
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, "Content-Length": str(len(payload)), **reply.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def _drip(self, reply: Reply, payload: bytes, content_type: str) -> None:
                head = [f"HTTP/1.1 {reply.status} Slow", f"Content-Type: {content_type}"]
                head += [f"Content-Length: {len(payload)}", "Connection: close"]
                head += [f"{k}: {v}" for k, v in reply.headers.items()]
                raw = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
                self.close_connection = True
                start = len(raw) - len(payload) if reply.drip_body_only else 0
                self.wfile.write(raw[:start])
                for index in range(start, len(raw)):
                    if server.stopping.is_set():
                        return
                    try:
                        self.wfile.write(raw[index : index + 1])
                    except OSError:  # the client hung up: what a deadline is for
                        server.dripped_until_hangup += 1
                        return
                    time.sleep(reply.drip)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path_prefix: str, *replies: Reply) -> None:
        self.scripts[path_prefix] = list(replies)

    def _next(self, path: str) -> Reply:
        for prefix, replies in self.scripts.items():
            if path.startswith(prefix):
                return replies.pop(0) if len(replies) > 1 else replies[0]
        return Reply(404, {"error": "not_found", "message": "nothing scripted"})

    def paths(self) -> list[str]:
        return [r.path.split("?")[0] for r in self.requests]

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def token_reply(token: str = "tok-1", expires_in: int = 3600) -> Reply:
    return Reply(200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})


def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.stop()
