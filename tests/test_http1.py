"""The serving benchmark's lean client (bench/http1.py): it keeps one connection while the server keeps it, opens a
new one when the server closes, reads each body by its stated length, and gives up on a stalled answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import http1


def handler(version: str, hang_up: bool = False, cut_short: bool = False):
    class Echo(BaseHTTPRequestHandler):
        """Answers each POST with its own body, and records the client port it came from. `hang_up`: closes the
        connection after each answer without saying so (as a server dropping an idle connection); `cut_short`:
        sends half the body it announced, then closes."""

        protocol_version = version
        ports: list[int] = []

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.ports.append(self.client_address[1])
            answer = json.dumps({"echo": json.loads(body), "no_cache": self.headers.get("Cache-Control")}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2] if cut_short else answer)
            self.close_connection = self.close_connection or hang_up or cut_short

        def log_message(self, *args) -> None:
            pass

    return Echo


@contextlib.contextmanager
def server(version: str, **behaviour):
    echo = handler(version, **behaviour)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", echo.ports
    finally:
        httpd.shutdown()
        httpd.server_close()


async def exchange(url: str, bodies: list[dict], headers: dict) -> list[tuple[int, bytes]]:
    connection = http1.Connection(url)
    try:
        requests = [http1.request_bytes(connection.netloc, "/search", json.dumps(b).encode(), headers) for b in bodies]
        return [await connection.send(request) for request in requests]
    finally:
        connection.close()


@pytest.mark.parametrize(("version", "connections"), [("HTTP/1.1", 1), ("HTTP/1.0", 5)])
def test_one_connection_while_the_server_keeps_it_and_a_new_one_when_it_closes(version, connections):
    bodies = [{"text": f"query {i}"} for i in range(5)]
    with server(version) as (url, ports):
        answers = asyncio.run(exchange(url, bodies, {"Cache-Control": "no-cache"}))
    assert [status for status, _ in answers] == [201] * 5
    assert [json.loads(body) for _, body in answers] == [{"echo": b, "no_cache": "no-cache"} for b in bodies]
    assert len(set(ports)) == connections


def test_an_idle_connection_the_server_dropped_is_replaced_and_the_request_sent_once_more():
    bodies = [{"text": f"query {i}"} for i in range(3)]
    with server("HTTP/1.1", hang_up=True) as (url, ports):
        answers = asyncio.run(exchange(url, bodies, {}))
    assert [status for status, _ in answers] == [201] * 3 and len(set(ports)) == len(ports) == 3


def test_a_response_cut_short_is_an_error_and_not_sent_again():
    with server("HTTP/1.1", cut_short=True) as (url, ports):
        with pytest.raises(http1.ResponseBroken):
            asyncio.run(exchange(url, [{"text": "a"}], {}))
    assert len(ports) == 1


def test_the_head_says_the_status_length_and_whether_the_connection_stays():
    assert http1.parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12") == (200, 12, True)
    assert http1.parse_head(b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\nConnection: close") == (503, 0, False)
    assert http1.parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3") == (200, 3, False)
    assert http1.parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive") == (200, 3, True)
    with pytest.raises(ValueError, match="without Content-Length"):
        http1.parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")


def test_a_stalled_answer_times_out_and_drops_its_connection(monkeypatch):
    monkeypatch.setattr(http1, "TIMEOUT_S", 0.2)
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog) and never answers
    connection = http1.Connection(f"http://127.0.0.1:{listener.getsockname()[1]}")

    async def stalled() -> None:
        await connection.send(http1.request_bytes(connection.netloc, "/search", b"{}", {}))

    try:
        with pytest.raises(TimeoutError):
            asyncio.run(stalled())
        assert connection._writer is None
    finally:
        listener.close()


def test_only_plain_http_is_spoken():
    with pytest.raises(ValueError, match="plain http"):
        http1.Connection("https://127.0.0.1:8443")
