"""RabbitMQ's list query parameters (rabbit_mgmt_util), over the facade's lists:

- ``sort`` (a field, dotted for a nested one: ``message_stats.publish``) and
  ``sort_reverse``;
- ``page`` and ``page_size`` (default 100, at most 500): the answer becomes
  {"filtered_count", "item_count", "items", "page", "page_count", "page_size",
  "total_count"}; ``name`` (a substring, or with ``use_regex=true`` a regular expression
  searched in the name) filters, and only with ``page``, as RabbitMQ;
- ``columns`` (comma-separated; a dotted column keeps its whole top-level field, as
  RabbitMQ 3.10 does) picks the fields of each item.

Errors are RabbitMQ's: 400 with ``bad_request`` / ``invalid_pagination_parameters`` /
``page_out_of_range``."""
from __future__ import annotations

import math
import re

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


def _one(query: dict, key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


class Lazy:
    """A list whose items are built only when shown: ``refs`` (cheap, in the list's
    order), ``name(ref)`` (what ``name`` filters and ``sort=name`` sorts by) and
    ``view(ref) -> dict``.  A page then builds only its own items; a sort on any other
    field builds them all first."""

    def __init__(self, refs: list, name, view):
        self.refs, self.name, self.view = refs, name, view


def _item_name(item: dict) -> str:
    return str(item.get("name", ""))


def apply(items, query: dict):
    sort = _one(query, "sort")
    paged = _one(query, "page") is not None
    if isinstance(items, Lazy) and (not paged or sort not in (None, "", "name")):
        items = [items.view(r) for r in items.refs]   # every item is shown or compared
    if isinstance(items, Lazy):
        refs, name_of, view = items.refs, items.name, items.view
        if sort:
            refs = sorted(refs, key=lambda r: _sort_key(name_of(r)))
    else:
        refs, name_of, view = items, _item_name, None
        if sort:
            refs = sorted(refs, key=lambda it: _sort_key(_get(it, sort)))
    if (_one(query, "sort_reverse") or "").lower() == "true":
        refs = refs[::-1]
    if not paged:
        return _columns(refs, query)
    return _page(refs, name_of, view, query)


def _page(refs: list, name_of, view, query: dict) -> dict:
    from .app import HTTPError, bad_request   # (app imports this module)
    try:
        page_n = int(_one(query, "page"))
        size_n = int(_one(query, "page_size") or DEFAULT_PAGE_SIZE)
    except ValueError:
        raise bad_request("Pagination parameters are invalid") from None
    if page_n < 1 or not 1 <= size_n <= MAX_PAGE_SIZE:
        raise HTTPError(400, "invalid_pagination_parameters",
                        f"Invalid pagination parameters: page number {page_n}, "
                        f"page size {size_n}")
    filtered = _by_name(refs, name_of, _one(query, "name"),
                        (_one(query, "use_regex") or "").lower() == "true")
    pages = max(1, math.ceil(len(filtered) / size_n))
    if page_n > pages:
        raise HTTPError(400, "page_out_of_range",
                        f"Page out of range, page: {page_n} page size: {size_n}, "
                        f"len: {len(filtered)}")
    chosen = filtered[(page_n - 1) * size_n:page_n * size_n]
    if view is not None:
        chosen = [view(r) for r in chosen]
    return {"filtered_count": len(filtered), "item_count": len(chosen),
            "items": _columns(chosen, query), "page": page_n, "page_count": pages,
            "page_size": size_n, "total_count": len(refs)}


def _by_name(items: list, name_of, name: str | None, use_regex: bool) -> list:
    if not name:
        return items
    if use_regex:
        from .app import bad_request
        try:
            rx = re.compile(name)
        except re.error:
            raise bad_request(f"invalid regular expression {name!r}") from None
        return [it for it in items if rx.search(name_of(it))]
    return [it for it in items if name in name_of(it)]


def _columns(items: list, query: dict) -> list:
    cols = _one(query, "columns")
    if not cols:
        return items
    keys = {c.split(".", 1)[0] for c in cols.split(",") if c}
    return [{k: v for k, v in it.items() if k in keys} for it in items]


def columns_of(doc: dict, query: dict) -> dict:
    """``columns`` on one object (GET /api/overview?columns=...)."""
    return _columns([doc], query)[0]


def _get(item: dict, path: str):
    value = item
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _sort_key(value):
    """Mixed types sort as RabbitMQ's Erlang term order roughly does: numbers first."""
    if value is None:
        return (2, "")
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))
