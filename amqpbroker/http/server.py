"""HTTP/1.1 over anyio streams with h11 (sans-I/O: it parses and frames, we move the
bytes), for the management API and, later, the Prometheus endpoint: the same server with
another ``app``.

``HTTPServer(app).handle(stream)`` serves one connection: keep-alive, ``Expect:
100-continue``, a header block and a body of bounded size, an idle timeout between
requests.  ``app(Request) -> Response`` is synchronous and runs on the event-loop thread,
as the broker's core wants (it has no locks).  A malformed request gets 400 and its
connection is closed; an app that raises gets 500 and a logged traceback; neither touches
any other connection, AMQP or HTTP."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import anyio
import h11
from anyio.abc import SocketAttribute

from ..listeners import _Guard

log = logging.getLogger("amqpbroker.http")

MAX_HEADERS = 64 * 1024          # the request line and headers
MAX_BODY = 20 * 1024 * 1024      # RabbitMQ's management.http_max_body_size default (20 MB)
IDLE_TIMEOUT = 60.0              # seconds a kept-alive connection may wait for a request
READ_TIMEOUT = 30.0              # seconds for the rest of a request once it started
CHUNK = 65536
MAX_CONNECTIONS = 1024           # at once, as RabbitMQ's web server (ranch) by default: the
                                 # file descriptors left are the AMQP listener's
_BUSY_BODY = b'{"error":"service_unavailable","reason":"too many clients"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


@dataclass
class Request:
    method: str                  # "GET"
    target: str                  # the raw path and query ("/api/queues/%2F?page=1")
    headers: dict                # lower-cased names -> text (a repeated header: the last)
    body: bytes = b""
    peer: tuple = ("?", 0)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list = field(default_factory=list)   # [(name, value)], text
    content_type: str | None = None


def text_response(status: int, text: str = "") -> Response:
    return Response(status, text.encode(), content_type="text/plain" if text else None)


class _TooLarge(Exception):
    pass


class HTTPServer:
    def __init__(self, app, max_body: int = MAX_BODY, idle_timeout: float = IDLE_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, max_connections: int = MAX_CONNECTIONS):
        self.app = app
        self.max_connections = max_connections
        self.active = 0
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self._guard = _Guard("an HTTP connection")
        self._app_guard = _Guard("an HTTP request handler")

    async def handle(self, stream, accepted: float | None = None) -> None:
        """One connection (the listener's handler).  Never raises."""
        try:
            peer = stream.extra(SocketAttribute.remote_address, ("?", 0))
        except Exception:
            peer = ("?", 0)
        self.active += 1
        try:
            async with stream:
                if self.active > self.max_connections:
                    with anyio.move_on_after(1):
                        await stream.send(BUSY)
                    return
                await self._serve(stream, peer)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError, TimeoutError):
            pass
        except Exception:
            self._guard.failed()
        finally:
            self.active -= 1

    async def _serve(self, stream, peer) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        while True:
            try:
                req = await self._read_request(conn, stream, peer)
            except h11.RemoteProtocolError as e:
                await self._refuse(conn, stream, e.error_status_hint or 400,
                                   f"bad request: {e}")
                return
            except _TooLarge:
                await self._refuse(conn, stream, 413, "request body too large")
                return
            except TimeoutError:   # a body begun and not finished within read_timeout
                await self._refuse(conn, stream, 408, "request timeout")
                return
            if req is None:
                return
            resp = self._call(req)
            await self._send_response(conn, stream, req, resp)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    def _call(self, req: Request) -> Response:
        try:
            return self.app(req)
        except Exception:
            self._app_guard.failed()
            return Response(500, b'{"error":"internal_error","reason":"see the broker log"}',
                            content_type="application/json")

    async def _read_request(self, conn, stream, peer) -> Request | None:
        """The next whole request, or None when the peer closed or went idle first."""
        start = None
        with anyio.move_on_after(self.idle_timeout):
            start = await self._next_event(conn, stream)
        if not isinstance(start, h11.Request):  # None (idle) or ConnectionClosed
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.headers}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _TooLarge
        body = bytearray()
        with anyio.fail_after(self.read_timeout):
            while True:
                if conn.they_are_waiting_for_100_continue:
                    await stream.send(conn.send(h11.InformationalResponse(
                        status_code=100, headers=[])))
                event = await self._next_event(conn, stream)
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        raise _TooLarge
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed in the middle of a request
                    return None
        return Request(start.method.decode("latin-1"), start.target.decode("latin-1"),
                       headers, bytes(body), peer)

    @staticmethod
    async def _next_event(conn, stream):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await stream.receive(CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            conn.receive_data(data)

    async def _send_response(self, conn, stream, req: Request, resp: Response) -> None:
        headers = [(k, v) for k, v in resp.headers]
        if resp.content_type:
            headers.append(("content-type", resp.content_type))
        headers.append(("content-length", str(len(resp.body))))
        out = conn.send(h11.Response(status_code=resp.status, headers=headers,
                                     reason=_REASONS.get(resp.status, b"")))
        if resp.body and req.method != "HEAD":
            out += conn.send(h11.Data(data=resp.body))
        out += conn.send(h11.EndOfMessage())
        await stream.send(out)

    async def _refuse(self, conn, stream, status: int, text: str) -> None:
        """400 (or 413, 431...) for a request we cannot read, when we may still answer."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = ('{"error":"bad_request","reason":%s}' % _json_str(text)).encode()
        try:
            out = conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(body))),
                ("connection", "close")], reason=_REASONS.get(status, b"")))
            out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await stream.send(out)


def _json_str(text: str) -> str:
    return json.dumps(text)


_REASONS = {200: b"OK", 201: b"Created", 204: b"No Content", 400: b"Bad Request",
            401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 408: b"Request Timeout",
            405: b"Method Not Allowed", 413: b"Payload Too Large", 415:
            b"Unsupported Media Type", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable"}
