"""The management API's request handling, between ``server.HTTPServer`` and the handlers
(``api_*.py``): routing by path pattern, HTTP basic auth against the broker's users,
RabbitMQ's tag and vhost rules, JSON in and out, RabbitMQ's error bodies and status codes,
and the list query parameters (``columns``, ``sort``, ``page``...: ``listing.py``).

A handler is ``fn(ctx, **path) -> result``: a dict or list is sent as JSON with 200
(``columns`` applied; a list through ``listing``), None as 204, a ``server.Response`` as
it is; ``Created`` (201) and ``errors.AMQPError`` raised by the admin facade are mapped
here, in one place."""
from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from dataclasses import dataclass

from .. import access, errors
from ..admin import Admin
from . import console, listing
from .server import Request, Response

JSON = "application/json"
REALM = 'Basic realm="RabbitMQ Management"'


class HTTPError(Exception):
    """An answer that is not a success: RabbitMQ's {"error": ..., "reason": ...}."""

    def __init__(self, status: int, error: str, reason: str, headers=()):
        super().__init__(reason)
        self.status, self.error, self.reason, self.headers = status, error, reason, list(headers)


def not_found() -> HTTPError:
    return HTTPError(404, "Object Not Found", "Not Found")


def bad_request(reason: str) -> HTTPError:
    return HTTPError(400, "bad_request", reason)


class Created:
    """201, with a Location header when one is given (bindings)."""

    def __init__(self, location: str | None = None):
        self.location = location


@dataclass
class Context:
    """What a handler gets: the facade as the user, the request, its query, its body."""

    admin: Admin
    broker: object
    user: object
    request: Request
    query: dict

    def body(self) -> dict:
        """The JSON object sent (an empty body is {}), else 400 as RabbitMQ."""
        raw = self.request.body
        if not raw.strip():
            return {}
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("not_json") from None
        if not isinstance(doc, dict):
            raise bad_request("not_json")
        return doc


@dataclass(frozen=True)
class Route:
    parts: tuple          # ("api", "queues", "{vhost}", "{name}")
    methods: dict         # "GET" -> handler
    vhost_scoped: bool    # {vhost} needs the user's access to it (is_authorized_vhost)


class App:
    def __init__(self, broker, routes: list[Route]):
        self.broker = broker
        self.routes = routes

    def __call__(self, req: Request) -> Response:
        if not req.target.startswith("/api/"):
            page = console.serve(req)   # the web console's files, no login
            if page is not None:
                return page
        try:
            return self._respond(req)
        except HTTPError as e:
            return error_response(e)

    def _respond(self, req: Request) -> Response:
        path, _, qs = req.target.partition("?")
        route, params = self._match(path)
        method = "GET" if req.method == "HEAD" else req.method
        handler = route.methods.get(method)
        if handler is None:
            allowed = sorted(set(route.methods) | ({"HEAD"} if "GET" in route.methods else
                                                   set()) | {"OPTIONS"})
            if req.method == "OPTIONS":
                return Response(200, headers=[("allow", ", ".join(allowed))])
            return Response(405, headers=[("allow", ", ".join(allowed))])
        user = self._authenticate(req)
        try:
            admin = Admin(self.broker, user.name)
        except errors.AccessRefused as e:
            raise HTTPError(401, "not_authorised", e.explanation) from None
        if route.vhost_scoped and "vhost" in params:
            self._check_vhost(user, admin.tags, params["vhost"])
        ctx = Context(admin, self.broker, user, req, urllib.parse.parse_qs(qs))
        try:
            result = handler(ctx, **params)
        except errors.AMQPError as e:
            raise _from_amqp(e) from None
        return _result(ctx, result)

    def _match(self, path: str) -> tuple[Route, dict]:
        segments = path.split("/")[1:]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments = segments[:-1]   # "/api/queues/" as "/api/queues"
        raw = [urllib.parse.unquote(s, errors="surrogateescape") for s in segments]
        for route in self.routes:
            if len(route.parts) != len(raw):
                continue
            params = {}
            for pat, seg in zip(route.parts, raw):
                if pat.startswith("{"):
                    params[pat[1:-1]] = seg
                elif pat != seg:
                    break
            else:
                return route, params
        raise not_found()

    def _authenticate(self, req: Request):
        """Basic auth with the AMQP rules: the password check, loopback-only users.  A
        script's request (``X-Requested-With``, the console's) gets its 401 without
        ``WWW-Authenticate``, so that a browser shows no login dialog of its own."""
        challenge = [] if "x-requested-with" in req.headers else [("www-authenticate", REALM)]
        header = req.headers.get("authorization", "")
        scheme, _, cred = header.partition(" ")
        if scheme.lower() != "basic":
            raise HTTPError(401, "", "", challenge)
        try:
            name, sep, password = base64.b64decode(cred.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            sep = ""
        if not sep:
            raise HTTPError(401, "not_authorized", "Login failed", challenge)
        try:
            user = self.broker.authenticate(name, password, _loopback(req.peer))
        except errors.AccessRefusedHard:
            user = None
        if user is None:
            raise HTTPError(401, "not_authorized", "Login failed", challenge)
        return user

    def _check_vhost(self, user, tags, vhost: str) -> None:
        """RabbitMQ's is_authorized_vhost: a vhost that exists needs the user's access
        (a permission entry), whatever its tags; one that does not is a 404 later."""
        if vhost in self.broker.vhosts and (user.name, vhost) not in self.broker.permissions:
            raise HTTPError(401, "not_authorised", "User not authorised to access virtual host")


def _loopback(peer) -> bool:
    host = str(peer[0])
    return host.startswith("127.") or host in ("::1", "localhost") or \
        host.startswith("::ffff:127.")


def _from_amqp(e: errors.AMQPError) -> HTTPError:
    """The facade's errors as RabbitMQ's management API answers them."""
    if isinstance(e, errors.NotFound):
        return not_found()
    if isinstance(e, (errors.AccessRefused, errors.AccessRefusedHard)):
        # a tag rule names the tag; a vhost rule (a permission, the default exchange) is
        # RabbitMQ's one text
        reason = e.explanation if e.explanation.startswith("Not ") else "Access refused."
        return HTTPError(401, "not_authorised", reason)
    return bad_request(e.explanation or e.name)


def dumps(doc) -> bytes:
    """Compact JSON, as RabbitMQ sends it."""
    return json.dumps(doc, separators=(",", ":")).encode()


def error_response(e: HTTPError) -> Response:
    if not e.error:  # no credentials at all: RabbitMQ sends an empty 401
        return Response(e.status, headers=e.headers)
    body = dumps({"error": e.error, "reason": e.reason})
    return Response(e.status, body, e.headers, JSON)


def _result(ctx: Context, result) -> Response:
    if result is None:
        return Response(204)
    if isinstance(result, Response):
        return result
    if isinstance(result, Created):
        return Response(201, headers=[("location", result.location)] if result.location
                        else [])
    if isinstance(result, (list, listing.Lazy)):
        result = listing.apply(result, ctx.query)
    elif isinstance(result, dict):   # one object: ``columns`` applies (the overview's)
        result = listing.columns_of(result, ctx.query)
    return Response(200, dumps(result), [("cache-control", "no-cache")], JSON)


def as_json(doc) -> Response:
    """A JSON answer that is not filtered by the list parameters."""
    return Response(200, dumps(doc), [("cache-control", "no-cache")], JSON)


def admin_only(ctx: Context) -> None:
    access_tags = ctx.admin.tags
    try:
        access.administrator(ctx.user.name, access_tags)
    except errors.AccessRefused as e:
        raise HTTPError(401, "not_authorised", e.explanation) from None
