"""A minimal HTTP/1.1 keep-alive client for the serving benchmark: each request's bytes built once, the response
read by its Content-Length, nothing else. The load client shares this machine's two cores with the service, so its
own CPU per request lands in every latency and in the overhead figure; aiohttp spent 0.3-1.2 ms of it per request.
Tools like wrk keep their client lean for the same reason.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

TIMEOUT_S = 30.0  # each request, from its connect (or first byte out) to its last byte in
MAX_HEAD = 64 * 1024


class ServerClosed(ConnectionError):
    """The server closed the connection before any of the response: a reused connection it had let go idle."""


class ResponseBroken(ConnectionError):
    """A response cut short or malformed: counted as an error, never sent again."""


def request_bytes(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A POST with a JSON body, ready to write."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, whether the server keeps the connection) of a response head."""
    status_line, *fields = head.decode("latin-1").split("\r\n")
    version, status = status_line.split(" ", 2)[:2]
    named = {k.strip().lower(): v.strip().lower() for k, _, v in (f.partition(":") for f in fields if f)}
    if "content-length" not in named:  # chunked or read-to-close: the service always states its length
        raise ValueError(f"a response without Content-Length (status {status})")
    connection = named.get("connection", "keep-alive" if version == "HTTP/1.1" else "close")
    return int(status), int(named["content-length"]), connection == "keep-alive"


class Connection:
    """One keep-alive connection to `url`'s host, reopened when the server closes it."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"plain http only (loopback benchmarks), not {url!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.netloc = parts.netloc
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of one request, within TIMEOUT_S. A request that does not finish (its timeout, a
        cancellation, a broken response) drops the connection: a late answer would be read as the next one's."""
        try:
            return await asyncio.wait_for(self._exchange(request), TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is not None:
            try:
                return await self._once(request)
            except ServerClosed:  # an idle connection the server closed: once more on a new one
                pass
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        return await self._once(request)

    async def _once(self, request: bytes) -> tuple[int, bytes]:
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if err.partial:
                raise ResponseBroken(f"the head cut short after {len(err.partial)} bytes") from err
            raise ServerClosed("closed before answering") from err
        except (ConnectionError, asyncio.LimitOverrunError) as err:
            raise ResponseBroken(str(err)) from err
        try:
            status, length, keep = parse_head(head[:-4])
            body = await self._reader.readexactly(length)
        except (ValueError, IndexError, asyncio.IncompleteReadError, ConnectionError) as err:
            raise ResponseBroken(str(err)) from err
        if not keep:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
