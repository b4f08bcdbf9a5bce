"""The configuration's shape: frozen dataclasses whose defaults are a working development
config (``Config()``, the same values as ``conf/broker.yaml``).  Reading and checking a
YAML file into them is config.py's; these only say what there is and what it defaults to."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TLS:
    """amqps on ``listen.hosts`` (issue 11; refused at start until then).  The shape
    every TLS listener (management, Prometheus) will share."""

    certfile: str
    keyfile: str
    port: int | None = 5671
    password: str | None = None       # of the key file
    cafile: str | None = None         # CAs that client certificates are checked against
    verify: str = "none"              # none | peer (check one that is sent) | require
    min_version: str = "tlsv1.2"      # tlsv1.2 | tlsv1.3
    ciphers: str | None = None        # OpenSSL cipher list; default: the ssl module's


@dataclass(frozen=True)
class Listen:
    hosts: tuple[str, ...] = ("127.0.0.1", "::1")  # IPv4 and IPv6 loopback: some clients use [::1]
    port: int | None = 5672  # null: no plain AMQP listener (then tls must be set)
    tls: TLS | None = None


@dataclass(frozen=True)
class ManagementTLS(TLS):
    """HTTPS for the management API: listen.tls's keys, RabbitMQ's management.ssl.port."""

    port: int | None = 15671


@dataclass(frozen=True)
class Management:
    """The management HTTP API (RabbitMQ's, issue 12) on its own listener: on by default,
    on loopback only; ``port: null`` turns the plain HTTP listener off."""

    hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    port: int | None = 15672
    tls: ManagementTLS | None = None


@dataclass(frozen=True)
class Prometheus:
    """RabbitMQ's Prometheus endpoint (rabbitmq_prometheus: ``/metrics``, no login) on
    its own listener: on by default, on loopback only; ``port: null`` turns it off."""

    hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    port: int | None = 15692


@dataclass(frozen=True)
class Limits:
    frame_max: int = 131072      # RabbitMQ's proposals; smaller client values win
    channel_max: int = 2047
    heartbeat: int = 60          # seconds; 0 disables
    # RabbitMQ 3.x's default (4.x lowered it to 16 MiB): clients' own test suites send
    # 20+ MB messages, and a broker that refuses them is not a drop-in replacement
    max_message_size: int = 128 * 1024 * 1024
    max_connections: int = 0     # 0 = unlimited
    # memory alarm, as RabbitMQ's vm_memory_high_watermark: when the messages held in
    # queues need more than this (a fraction of the machine's RAM; 0 disables), publishing
    # connections are blocked (Connection.Blocked, their sockets are not read) until the
    # consumers have drained the queues below it
    memory_high_watermark: float = 0.4
    memory_high_watermark_bytes: int = 0  # an absolute limit instead, when > 0
    # content one connection may hold before it is routed (bodies being assembled,
    # uncommitted tx publishes, a partial frame): past it the connection is closed with
    # 530.  The default is the largest max_message_size allowed; 0: no cap
    max_buffered_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class Server:
    product: str = "amqpbroker"  # some clients branch on "RabbitMQ"; settable on purpose
    cluster_name: str = "amqpbroker"
    log_level: str = "info"


@dataclass(frozen=True)
class Storage:
    backend: str = "sqlite"  # sqlite: durable (WAL, group commit); memory: nothing survives
    path: str = "./data"


@dataclass(frozen=True)
class User:
    name: str
    password: str | None = None       # plain text, for development
    password_hash: str | None = None  # RabbitMQ-compatible base64(salt4 + sha256(salt4 + pw))
    tags: tuple[str, ...] = ()
    loopback_only: bool = False
    # of password_hash: rabbit_password_hashing_sha256 | _sha512 | _md5 (passwords.py)
    hashing_algorithm: str = "rabbit_password_hashing_sha256"
    limits: dict = field(default_factory=dict)  # max-connections, max-channels (limits.py)


class VHost(str):
    """A vhost of ``vhosts``: its name (a ``str``, so that names compare and look up as
    before) carrying its ``limits`` (max-connections, max-queues; limits.py).  The YAML
    item is a name, or a mapping ``{name, limits}``."""

    limits: dict

    def __new__(cls, name: str, limits: dict | None = None):
        self = super().__new__(cls, name)
        self.limits = dict(limits or {})
        return self


@dataclass(frozen=True)
class VHostSpec:
    """The mapping form of a ``vhosts`` item (config.py turns it into a VHost)."""

    name: str
    limits: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Permission:
    user: str
    vhost: str = "/"
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


@dataclass(frozen=True)
class TopicPermission:
    """RabbitMQ's topic permission: on the topic exchange ``exchange``, the routing keys
    ``user`` may publish with (``write``) and bind with (``read``), as regular expressions
    that may use ``{username}`` and ``{vhost}``; "" means none (RabbitMQ's "^$")."""

    user: str
    exchange: str
    write: str
    read: str
    vhost: str = "/"


@dataclass(frozen=True)
class ExchangeDefinition:
    name: str
    type: str = "direct"
    vhost: str = "/"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueueDefinition:
    name: str
    vhost: str = "/"
    durable: bool = True
    auto_delete: bool = False
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BindingDefinition:
    source: str
    destination: str
    destination_type: str = "queue"
    routing_key: str = ""
    vhost: str = "/"
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyDefinition:
    """A RabbitMQ policy (policies.py): ``apply_to`` is RabbitMQ's ``apply-to``."""

    name: str
    pattern: str
    definition: dict
    vhost: str = "/"
    priority: int = 0
    apply_to: str = "all"


@dataclass(frozen=True)
class Definitions:
    """Exchanges, queues and bindings declared at start (after recovery), as a client
    would declare them: an existing entity must be equivalent; policies and operator
    policies, applied before them."""

    exchanges: tuple[ExchangeDefinition, ...] = ()
    queues: tuple[QueueDefinition, ...] = ()
    bindings: tuple[BindingDefinition, ...] = ()
    policies: tuple[PolicyDefinition, ...] = ()
    operator_policies: tuple[PolicyDefinition, ...] = ()


@dataclass(frozen=True)
class Config:
    server: Server = field(default_factory=Server)
    listen: Listen = field(default_factory=Listen)
    management: Management = field(default_factory=Management)
    prometheus: Prometheus = field(default_factory=Prometheus)
    limits: Limits = field(default_factory=Limits)
    storage: Storage = field(default_factory=Storage)
    vhosts: tuple[VHost, ...] = (VHost("/"),)   # plain strings work too
    users: tuple[User, ...] = (User("guest", password="guest", tags=("administrator",),
                                    loopback_only=True),)
    permissions: tuple[Permission, ...] = (Permission("guest", "/"),)
    # none: every routing key is allowed, as RabbitMQ without topic permissions
    topic_permissions: tuple[TopicPermission, ...] = ()
    definitions: Definitions = field(default_factory=Definitions)
    # SASL mechanisms offered, in order (RabbitMQ's auth_mechanisms): PLAIN, AMQPLAIN,
    # EXTERNAL (TLS only: the client certificate names the user), ANONYMOUS
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "AMQPLAIN")
    ssl_cert_login_from: str = "distinguished_name"   # or common_name
    anonymous_login_user: str | None = None           # who ANONYMOUS logs in as
