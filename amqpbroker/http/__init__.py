"""The HTTP edge (issue 12): ``server`` (HTTP/1.1 with h11 over anyio streams, any app),
``app`` (routing, basic auth, RabbitMQ's errors), ``listing`` (the list query
parameters), ``routes`` (the management API's URL table) and its handlers (``api_node``,
``api_topology``, ``messages``)."""
