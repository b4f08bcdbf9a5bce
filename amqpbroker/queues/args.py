"""Queue arguments: the ones RabbitMQ knows (compared on redeclare) and the ones we act on,
parsed and validated as RabbitMQ does, with its texts."""
from __future__ import annotations

from dataclasses import dataclass

from .. import errors

# The queue arguments RabbitMQ knows, compared on redeclare (unknown ones are neither
# compared nor validated, as RabbitMQ).
QUEUE_ARGS = ("x-queue-type", "x-message-ttl", "x-expires", "x-max-length",
              "x-max-length-bytes", "x-overflow", "x-dead-letter-exchange",
              "x-dead-letter-routing-key", "x-max-priority", "x-single-active-consumer",
              "x-delivery-limit", "x-queue-mode", "x-queue-version",
              "x-dead-letter-strategy", "x-queue-master-locator", "x-queue-leader-locator",
              # ours (delayed.py): every message visible only after this many ms
              "x-delivery-delay",
              # the deduplication plugin's (queues/dedup.py), and LavinMQ's header name
              "x-message-deduplication", "x-deduplication-header")

# the x-queue-type values declare accepts: filled by the registry (queues/__init__.py)
TYPE_NAMES: set[str] = set()


@dataclass(frozen=True)
class QueueArgs:
    """The queue arguments we act on, validated as RabbitMQ validates them."""

    queue_type: str = "classic"
    message_ttl: int | None = None    # ms
    expires: int | None = None        # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dlx: str | None = None
    dlrk: str | None = None
    max_priority: int | None = None
    single_active: bool = False
    delivery_limit: int | None = None
    delivery_delay: int | None = None  # ms, x-delivery-delay (None or 0: none)
    deduplicate: bool = False          # x-message-deduplication (queues/dedup.py)

    @classmethod
    def parse(cls, queue: str, vhost: str, args: dict,
              types: dict | None = None) -> "QueueArgs":
        """``types``: the arguments' wire type names (as decoded), for RabbitMQ's texts."""
        types = types or {}

        def type_of(key, v):
            return types.get(key) or ("bool" if isinstance(v, bool) else
                                      "longstr" if isinstance(v, str) else type(v).__name__)

        def bad(key, why):
            return errors.PreconditionFailed(
                f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}")

        def integer(key, minimum=0, maximum=None, zero_ok=True):
            v = args.get(key)
            if v is None:
                return None
            # a timestamp decodes as an int, but is not one of RabbitMQ's integer types
            if not isinstance(v, int) or isinstance(v, bool) or types.get(key) == "timestamp":
                raise bad(key, f'"expected integer, got {type_of(key, v)}"')
            if v < minimum:
                raise bad(key, f"{{value_negative,{v}}}" if v < 0 else f"{{value_zero,{v}}}")
            if maximum is not None and v > maximum:
                # RabbitMQ's texts: check_expiry for TTLs, max_value_exceeded for priority
                raise bad(key, f"{{max_value_exceeded,{v}}}" if key == "x-max-priority"
                          else f"{{value_too_large,{v}}}")
            return v

        def string(key):
            v = args.get(key)
            if v is None:
                return None
            if not isinstance(v, str):
                raise bad(key, f"{{unacceptable_type,{type_of(key, v)}}}")
            return v

        qtype = string("x-queue-type") or "classic"
        if qtype not in TYPE_NAMES:
            if qtype == "stream":
                raise errors.PreconditionFailed(
                    f"queue type 'stream' for queue '{queue}' in vhost '{vhost}' is not "
                    "supported by amqpbroker")
            raise bad("x-queue-type", f'"unsupported queue type \'{qtype}\'"')
        overflow = string("x-overflow") or "drop-head"
        if overflow not in ("drop-head", "reject-publish", "reject-publish-dlx"):
            raise bad("x-overflow", "invalid_overflow")
        dlx, dlrk = string("x-dead-letter-exchange"), string("x-dead-letter-routing-key")
        if dlrk is not None and dlx is None:
            raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        sac = args.get("x-single-active-consumer", False)
        if not isinstance(sac, bool):
            raise bad("x-single-active-consumer",
                      f"{{unacceptable_type,{type_of('x-single-active-consumer', sac)}}}")
        dedup = args.get("x-message-deduplication", False)
        if not isinstance(dedup, bool):
            raise bad("x-message-deduplication",
                      f"{{unacceptable_type,{type_of('x-message-deduplication', dedup)}}}")
        header = string("x-deduplication-header")
        if header is not None and not 0 < len(header.encode()) < 256:
            raise bad("x-deduplication-header", "{invalid_header_name}")
        limit = integer("x-delivery-limit", minimum=-1)
        if limit is None and qtype == "quorum":
            limit = 20  # RabbitMQ 4.x quorum queues' default
        if limit == -1:
            limit = None
        return cls(
            queue_type=qtype,
            message_ttl=integer("x-message-ttl", 0, 315_360_000_000),
            expires=integer("x-expires", 1, 315_360_000_000),
            max_length=integer("x-max-length"),
            max_length_bytes=integer("x-max-length-bytes"),
            overflow=overflow,
            dlx=dlx,
            dlrk=dlrk,
            max_priority=integer("x-max-priority", 0, 255),
            single_active=sac,
            delivery_limit=limit,
            delivery_delay=integer("x-delivery-delay", 0, 4_294_967_295) or None,
            deduplicate=dedup,
        )
