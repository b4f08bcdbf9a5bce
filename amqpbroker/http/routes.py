"""The management API's URL table: path pattern -> handlers by method.  A pattern's
``{vhost}`` is checked against the user's vhost access as RabbitMQ's is_authorized_vhost
does (``vhost_scoped``); ``{name}`` segments are percent-decoded (``%2F`` is ``/``)."""
from __future__ import annotations

from functools import partial

from . import api_node as n
from . import api_runtime as r
from . import api_topology as t
from .app import App, Route


def _r(path: str, vhost_scoped: bool = True, **methods) -> Route:
    return Route(tuple(path.strip("/").split("/")), methods, vhost_scoped)


ROUTES = [
    _r("api/overview", GET=n.overview),
    _r("api/whoami", GET=n.whoami),
    _r("api/nodes", GET=n.nodes),
    _r("api/nodes/{name}", GET=n.node),
    _r("api/vhosts", GET=n.vhosts),
    _r("api/vhosts/{vhost}", False, GET=n.vhost, PUT=n.put_vhost, DELETE=n.delete_vhost),
    _r("api/vhosts/{vhost}/permissions", False, GET=n.vhost_permissions),
    _r("api/vhosts/{vhost}/connections", GET=n.vhost_connections),
    _r("api/users", GET=n.users),
    _r("api/users/{name}", GET=n.user, PUT=n.put_user, DELETE=n.delete_user),
    _r("api/users/{name}/permissions", GET=n.user_permissions),
    _r("api/permissions", GET=n.permissions),
    _r("api/permissions/{vhost}/{user}", False, GET=n.permission, PUT=n.put_permission,
       DELETE=n.delete_permission),
    _r("api/connections", GET=n.connections),
    _r("api/connections/{name}", GET=n.connection, DELETE=n.close_connection),
    _r("api/connections/{name}/channels", GET=n.connection_channels),
    _r("api/channels", GET=n.channels),
    _r("api/channels/{name}", GET=n.channel),
    _r("api/consumers", GET=n.consumers),
    _r("api/consumers/{vhost}", GET=n.consumers),
    _r("api/exchanges", GET=t.exchanges),
    _r("api/exchanges/{vhost}", GET=t.exchanges),
    _r("api/exchanges/{vhost}/{name}", GET=t.exchange, PUT=t.put_exchange,
       DELETE=t.delete_exchange),
    _r("api/exchanges/{vhost}/{name}/publish", POST=t.publish),
    _r("api/exchanges/{vhost}/{name}/bindings/source",
       GET=partial(t.exchange_bindings, direction="source")),
    _r("api/exchanges/{vhost}/{name}/bindings/destination",
       GET=partial(t.exchange_bindings, direction="destination")),
    _r("api/queues", GET=t.queues),
    _r("api/queues/{vhost}", GET=t.queues),
    _r("api/queues/{vhost}/{name}", GET=t.queue, PUT=t.put_queue, DELETE=t.delete_queue),
    _r("api/queues/{vhost}/{name}/contents", DELETE=t.purge),
    _r("api/queues/{vhost}/{name}/get", POST=t.get),
    _r("api/queues/{vhost}/{name}/bindings", GET=t.queue_bindings),
    _r("api/bindings", GET=t.bindings),
    _r("api/bindings/{vhost}", GET=t.bindings),
    _r("api/bindings/{vhost}/e/{source}/{kind}/{dest}", GET=t.between, POST=t.bind),
    _r("api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}", GET=t.binding,
       DELETE=t.unbind),
    _r("api/definitions", GET=n.get_definitions, POST=n.post_definitions),
    _r("api/definitions/{vhost}", False, GET=n.get_definitions, POST=n.post_definitions),
    _r("api/health/checks/alarms", GET=n.alarms),
    _r("api/health/checks/local-alarms", GET=n.alarms),
    _r("api/health/checks/port-listener/{port}", GET=n.port_listener),
    _r("api/health/checks/protocol-listener/{protocol}", GET=n.protocol_listener),
    _r("api/health/checks/virtual-hosts", GET=n.virtual_hosts),
    _r("api/health/checks/node-is-quorum-critical", GET=n.single_node),
    _r("api/health/checks/node-is-mirror-sync-critical", GET=n.single_node),
    _r("api/aliveness-test/{vhost}", GET=n.aliveness),
    _r("api/queues/{vhost}/{name}/drain", POST=r.drain),
    _r("api/policies", GET=r.policies_of),
    _r("api/policies/{vhost}", GET=r.policies_of),
    _r("api/policies/{vhost}/{name}", GET=r.policy, PUT=r.put_policy, DELETE=r.delete_policy),
    _r("api/operator-policies", GET=partial(r.policies_of, operator=True)),
    _r("api/operator-policies/{vhost}", GET=partial(r.policies_of, operator=True)),
    _r("api/operator-policies/{vhost}/{name}", GET=partial(r.policy, operator=True),
       PUT=partial(r.put_policy, operator=True), DELETE=partial(r.delete_policy, operator=True)),
    _r("api/topic-permissions", GET=r.topic_permissions),
    _r("api/topic-permissions/{vhost}/{user}", False, GET=r.topic_permission,
       PUT=r.put_topic_permission, DELETE=r.delete_topic_permission),
    _r("api/vhost-limits", GET=r.vhost_limits),
    _r("api/vhost-limits/{vhost}", False, GET=r.vhost_limits),
    _r("api/vhost-limits/{vhost}/{name}", False, PUT=r.put_vhost_limit,
       DELETE=r.delete_vhost_limit),
    _r("api/parameters", GET=r.parameters),
    _r("api/parameters/{component}", GET=r.parameters),
    _r("api/parameters/{component}/{vhost}", GET=r.parameters),
    _r("api/parameters/{component}/{vhost}/{name}", GET=r.parameters, PUT=r.put_parameter,
       DELETE=r.delete_parameter),
    _r("api/global-parameters", GET=r.global_parameters),
    _r("api/user-limits", GET=r.user_limits),
    _r("api/user-limits/{user}", GET=r.user_limits),
    _r("api/user-limits/{user}/{name}", PUT=r.put_user_limit, DELETE=r.delete_user_limit),
]


def management_app(broker) -> App:
    return App(broker, ROUTES)
