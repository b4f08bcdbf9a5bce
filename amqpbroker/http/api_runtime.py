"""Handlers of what RabbitMQ keeps as runtime parameters: policies, operator policies,
topic permissions, vhost limits and user limits, with its status codes (201 for a new
policy or topic permission, 204 otherwise) and its "Validation failed" bodies."""
from __future__ import annotations

import dataclasses
import html

from .. import limits, policies
from ..config import ConfigError, TopicPermission, check_regex
from .app import (Context, Created, HTTPError, admin_only, as_json, bad_request,
                  not_found)
from .server import Response


def _invalid(text: str, escaped: bool = True) -> HTTPError:
    # RabbitMQ's body; its policy texts come HTML-escaped (its limit texts do not)
    shown = html.escape(text, quote=False) if escaped else text
    return bad_request(f"Validation failed\n\n{shown}\n")


# ---------------------------------------------------------------------- policies

# (each handler serves /api/policies and, with operator=True, /api/operator-policies)

def policies_of(ctx: Context, vhost: str | None = None, operator: bool = False) -> list:
    return ctx.admin.policies(vhost, operator)


def policy(ctx: Context, vhost: str, name: str, operator: bool = False) -> dict:
    for p in ctx.admin.policies(vhost, operator):
        if p["name"] == name:
            return p
    raise not_found()


def put_policy(ctx: Context, vhost: str, name: str, operator: bool = False):
    body = ctx.body()
    missing = [k for k in ("pattern", "definition") if k not in body]
    if missing:
        raise bad_request(f"[{','.join('{key_missing,%s}' % k for k in missing)}]")
    new = all(p["name"] != name for p in ctx.admin.policies(vhost, operator))
    try:
        ctx.admin.set_policy(vhost, name, body["pattern"], body["definition"],
                             body.get("priority", 0), body.get("apply-to", "all"), operator)
    except policies.PolicyError as e:
        raise _invalid(str(e)) from None
    return Created() if new else None


def delete_policy(ctx: Context, vhost: str, name: str, operator: bool = False) -> None:
    ctx.admin.clear_policy(vhost, name, operator)   # NotFound: 404


# ---------------------------------------------------------------------- topic permissions

def topic_permissions(ctx: Context) -> list:
    return ctx.admin.topic_permissions()


def topic_permission(ctx: Context, vhost: str, user: str) -> list:
    found = ctx.admin.topic_permissions(vhost, user)
    if not found:
        raise not_found()
    return found


def put_topic_permission(ctx: Context, vhost: str, user: str):
    admin_only(ctx)
    body = ctx.body()
    missing = [k for k in ("exchange", "write", "read") if not isinstance(body.get(k), str)]
    if missing:
        raise bad_request(f"[{', '.join(missing)}] are required")
    b = ctx.broker
    if vhost not in b.vhosts or user not in b.users:
        raise bad_request("vhost_or_user_not_found")
    for key in ("write", "read"):
        try:
            check_regex(body[key], key, as_bytes=True)
        except ConfigError as e:
            raise bad_request(str(e)) from None
    old = b.topic_permissions.get((user, vhost))
    new = old is None or body["exchange"] not in old.patterns
    b.set_topic_permissions(TopicPermission(user, body["exchange"], body["write"],
                                            body["read"], vhost))
    return Created() if new else None


def delete_topic_permission(ctx: Context, vhost: str, user: str) -> None:
    admin_only(ctx)
    if ctx.broker.topic_permissions.pop((user, vhost), None) is None:
        raise not_found()


# ---------------------------------------------------------------------- limits

def vhost_limits(ctx: Context, vhost: str | None = None) -> list:
    admin_only(ctx)
    b = ctx.broker
    if vhost is not None and vhost not in b.vhosts:
        raise not_found()
    names = [vhost] if vhost is not None else sorted(b.vhosts)
    return [{"vhost": n, "value": dict(b.vhosts[n].limits)} for n in names
            if b.vhosts[n].limits]


def put_vhost_limit(ctx: Context, vhost: str, name: str) -> None:
    admin_only(ctx)
    vh = ctx.broker.vhosts.get(vhost)
    if vh is None:
        raise not_found()
    value = _limit_value(ctx, name, limits.VHOST_KEYS)
    vh.limits = {**vh.limits, name: value}


def delete_vhost_limit(ctx: Context, vhost: str, name: str) -> None:
    admin_only(ctx)
    vh = ctx.broker.vhosts.get(vhost)
    if vh is None or name not in vh.limits:
        raise not_found()
    vh.limits = {k: v for k, v in vh.limits.items() if k != name}


def user_limits(ctx: Context, user: str | None = None) -> list:
    admin_only(ctx)
    b = ctx.broker
    if user is not None and user not in b.users:
        raise not_found()
    names = [user] if user is not None else sorted(b.users)
    return [{"user": n, "value": dict(b.users[n].limits)} for n in names if b.users[n].limits]


def put_user_limit(ctx: Context, user: str, name: str) -> None:
    admin_only(ctx)
    u = ctx.broker.users.get(user)
    if u is None:
        raise not_found()
    value = _limit_value(ctx, name, limits.USER_KEYS)
    ctx.broker.users[user] = dataclasses.replace(u, limits={**u.limits, name: value})


def delete_user_limit(ctx: Context, user: str, name: str) -> None:
    admin_only(ctx)
    u = ctx.broker.users.get(user)
    if u is None or name not in u.limits:
        raise not_found()
    ctx.broker.users[user] = dataclasses.replace(
        u, limits={k: v for k, v in u.limits.items() if k != name})


def _limit_value(ctx: Context, name: str, keys: tuple[str, ...]) -> int:
    value = ctx.body().get("value")
    if name not in keys:
        raise _invalid(f"Unrecognised terms [{{<<\"{name}\">>,{value}}}] in limits", False)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(f"{name} should be a number, actually was "
                       f"{policies._tp(value)}", False)
    return value


# ---------------------------------------------------------------------- drain (ours)

def drain(ctx: Context, vhost: str, name: str) -> Response:
    """POST /api/queues/{vhost}/{name}/drain: one poison pill per consumer of the queue
    (README, Poison-pill drain); not in RabbitMQ's API."""
    return as_json({"pills": ctx.admin.drain(vhost, name)})


# ---------------------------------------------------------------------- parameters

# the one runtime-parameter component here (federation and shovel have no counterpart)
VHOST_LIMITS = "vhost-limits"


def _policymaker(ctx: Context) -> None:
    from .. import access, errors
    try:
        access.policymaker(ctx.user.name, ctx.admin.tags)
    except errors.AccessRefused as e:
        raise HTTPError(401, "not_authorised", e.explanation) from None


def parameters(ctx: Context, component: str | None = None, vhost: str | None = None,
               name: str | None = None):
    """RabbitMQ's runtime parameters: the vhost limits appear as its ``vhost-limits``
    component (name ``limits``); any other component lists nothing, as RabbitMQ's."""
    _policymaker(ctx)
    b = ctx.broker
    items = [{"value": dict(vh.limits), "vhost": n, "component": VHOST_LIMITS,
              "name": "limits"} for n, vh in sorted(b.vhosts.items()) if vh.limits]
    items = [p for p in items if (component is None or p["component"] == component) and
             (vhost is None or p["vhost"] == vhost)]
    if name is None:
        return items
    for p in items:
        if p["name"] == name:
            return as_json(p)
    raise not_found()


def put_parameter(ctx: Context, component: str, vhost: str, name: str) -> None:
    _policymaker(ctx)
    if component != VHOST_LIMITS:
        raise _invalid(f"component {component} not found", False)
    vh = ctx.broker.vhosts.get(vhost)
    if vh is None:
        raise not_found()
    try:
        vh.limits = limits.parse(ctx.body().get("value"), limits.VHOST_KEYS)
    except limits.LimitError as e:
        raise _invalid(str(e), False) from None


def delete_parameter(ctx: Context, component: str, vhost: str, name: str) -> None:
    _policymaker(ctx)
    vh = ctx.broker.vhosts.get(vhost)
    if component != VHOST_LIMITS or vh is None or not vh.limits:
        raise not_found()
    vh.limits = {}


def global_parameters(ctx: Context) -> list:
    _policymaker(ctx)
    return [{"name": "internal_cluster_id", "value": "amqpbroker-cluster-id-amqpbroker"}]
