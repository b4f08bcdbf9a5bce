"""``amqpbroker ctl``: the operator's verbs over the management HTTP API (of amqpbroker or
of RabbitMQ, where the endpoint is RabbitMQ's), with the standard library's HTTP client:

    amqpbroker ctl [--url URL] [--user U] [--password P] [--vhost V] VERB ...

    list queues|exchanges|bindings|connections|consumers|users|vhosts|policies [--json]
    purge QUEUE            delete queue|exchange NAME        close-connection NAME [REASON]
    export [FILE]          import FILE                       drain QUEUE
    set-policy NAME PATTERN DEFINITION [--priority N] [--apply-to all|queues|exchanges]
    clear-policy NAME

The URL, user and password default to ``AMQPBROKER_MGMT_URL`` (http://127.0.0.1:15672/),
``AMQPBROKER_USER`` and ``AMQPBROKER_PASSWORD`` (guest/guest).  Errors are one line on
stderr with the API's reason; the exit code is 1 (2 for a usage mistake)."""
from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

# what `list` shows of each kind, as rabbitmqctl's default columns
COLUMNS = {
    "queues": ("name", "messages", "consumers"),
    "exchanges": ("name", "type"),
    "bindings": ("source", "destination", "destination_type", "routing_key"),
    "connections": ("name", "user", "vhost", "channels"),
    "consumers": ("queue.name", "consumer_tag", "ack_required", "prefetch_count"),
    "users": ("name", "tags"),
    "vhosts": ("name", "messages"),
    "policies": ("name", "pattern", "apply-to", "definition", "priority"),
}
VHOST_SCOPED = {"queues", "exchanges", "bindings", "consumers", "policies"}


class CtlError(Exception):
    pass


class Client:
    def __init__(self, url: str, user: str, password: str):
        self.base = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body=None, headers: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": self.auth, **(headers or {})})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                doc = json.loads(raw)
                reason = doc.get("reason") or doc.get("error")
            except ValueError:
                reason = raw.decode(errors="replace").strip() or e.reason
            raise CtlError(f"{method} {path}: {e.code} {reason}") from None
        except urllib.error.URLError as e:
            raise CtlError(f"cannot reach {self.base}: {e.reason}") from None
        return json.loads(raw) if raw.strip() else None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _cell(item: dict, column: str) -> str:
    value = item
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def run(args, out=sys.stdout) -> None:
    c = Client(args.url, args.user, args.password)
    v = _q(args.vhost)
    if args.verb == "list":
        path = f"/api/{args.kind}" + (f"/{v}" if args.kind in VHOST_SCOPED else "")
        items = c.call("GET", path)
        if args.json:
            json.dump(items, out, indent=2)
            out.write("\n")
            return
        cols = COLUMNS[args.kind]
        out.write("\t".join(cols) + "\n")
        for item in items:
            out.write("\t".join(_cell(item, col) for col in cols) + "\n")
    elif args.verb == "purge":
        c.call("DELETE", f"/api/queues/{v}/{_q(args.queue)}/contents")
    elif args.verb == "delete":
        c.call("DELETE", f"/api/{args.kind}s/{v}/{_q(args.name)}")
    elif args.verb == "close-connection":
        c.call("DELETE", f"/api/connections/{_q(args.name)}",
               headers={"X-Reason": args.reason} if args.reason else None)
    elif args.verb == "export":
        doc = c.call("GET", "/api/definitions")
        text = json.dumps(doc, indent=2) + "\n"
        if args.file:
            with open(args.file, "w") as f:
                f.write(text)
        else:
            out.write(text)
    elif args.verb == "import":
        try:
            with open(args.file) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise CtlError(f"{args.file}: {e}") from None
        c.call("POST", "/api/definitions", doc)
    elif args.verb == "set-policy":
        try:
            definition = json.loads(args.definition)
        except ValueError as e:
            raise CtlError(f"DEFINITION: not JSON ({e})") from None
        c.call("PUT", f"/api/policies/{v}/{_q(args.name)}",
               {"pattern": args.pattern, "definition": definition,
                "priority": args.priority, "apply-to": args.apply_to})
    elif args.verb == "clear-policy":
        c.call("DELETE", f"/api/policies/{v}/{_q(args.name)}")
    elif args.verb == "drain":
        doc = c.call("POST", f"/api/queues/{v}/{_q(args.queue)}/drain", {})
        out.write(f"{doc['pills']} poison pills appended to '{args.queue}'\n")


def add_parser(sub) -> None:
    ctl = sub.add_parser("ctl", help="operate a running broker over its management API")
    ctl.add_argument("--url", default=os.environ.get("AMQPBROKER_MGMT_URL",
                                                     "http://127.0.0.1:15672/"))
    ctl.add_argument("--user", default=os.environ.get("AMQPBROKER_USER", "guest"))
    ctl.add_argument("--password", default=os.environ.get("AMQPBROKER_PASSWORD", "guest"))
    ctl.add_argument("--vhost", default="/")
    verbs = ctl.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("list")
    ls.add_argument("kind", choices=sorted(COLUMNS))
    ls.add_argument("--json", action="store_true")
    verbs.add_parser("purge").add_argument("queue")
    d = verbs.add_parser("delete")
    d.add_argument("kind", choices=("queue", "exchange"))
    d.add_argument("name")
    cc = verbs.add_parser("close-connection")
    cc.add_argument("name")
    cc.add_argument("reason", nargs="?")
    verbs.add_parser("export").add_argument("file", nargs="?")
    verbs.add_parser("import").add_argument("file")
    sp = verbs.add_parser("set-policy")
    sp.add_argument("name")
    sp.add_argument("pattern")
    sp.add_argument("definition", help='JSON, e.g. \'{"max-length": 1000}\'')
    sp.add_argument("--priority", type=int, default=0)
    sp.add_argument("--apply-to", default="all",
                    choices=("all", "queues", "exchanges", "classic_queues",
                             "quorum_queues", "streams"))
    verbs.add_parser("clear-policy").add_argument("name")
    verbs.add_parser("drain").add_argument("queue")


def main(args) -> int:
    try:
        run(args)
    except CtlError as e:
        print(f"amqpbroker ctl: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # (| head)
        sys.stderr.close()
    return 0
