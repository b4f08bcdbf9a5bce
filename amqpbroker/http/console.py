"""The web console's files (``http/console/``: plain HTML, CSS and JavaScript, shipped
with the package, nothing fetched at run time), served by the management listener
without a login: the page logs in to the API itself, as RabbitMQ's does."""
from __future__ import annotations

from importlib import resources

from .server import Request, Response, text_response

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
         "/console/console.css": ("console.css", "text/css; charset=utf-8")}


def serve(req: Request) -> Response | None:
    """The console's answer to ``req``, or None when the path is not one of its files."""
    path = req.target.split("?", 1)[0]
    if path in ("/index.html", "/console", "/console/"):
        path = "/"
    found = FILES.get(path)
    if found is None:
        return None
    if req.method not in ("GET", "HEAD"):
        return Response(405, headers=[("allow", "GET, HEAD")])
    name, ctype = found
    try:
        body = resources.files(__package__).joinpath("console", name).read_bytes()
    except OSError:  # a broken install: say so, never a 500 without a reason
        return text_response(500, f"console file {name} is missing from the package\n")
    return Response(200, body if req.method == "GET" else b"",
                    [("cache-control", "no-cache")], ctype)
