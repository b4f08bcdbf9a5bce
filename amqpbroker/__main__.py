"""``amqpbroker`` / ``python -m amqpbroker``: serve, check-config, perf.

Every mistake in the configuration (file, flags, or what fails only at start: a host that
cannot be bound, a port in use, a data directory or store that cannot be used) is one line
on stderr naming the file and key path, or the flag, and exit code 2."""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile

from . import __version__, config as config_mod, ctl
# the broker's modules register the exchange types built above the config layer
# (x-delayed-message in delayed.py), which config validation looks up by name
from . import broker as _broker  # noqa: F401


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line too (not usage + error)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _load(path: str | None) -> config_mod.Config:
    return config_mod.load(path) if path else config_mod.Config()


def _check_definitions(path: str, cfg: config_mod.Config) -> None:
    """check-config applies the definitions as serve does, on an empty broker with the
    configured kind of store (a throw-away one), so a queue argument RabbitMQ refuses, a
    binding to nothing or a value the store cannot keep fails here too."""
    from .broker import Broker
    from .store import MemoryStore
    try:
        if cfg.storage.backend != "sqlite":
            Broker(cfg, MemoryStore())
            return
        from .store.sqlite import SQLiteStore
        with tempfile.TemporaryDirectory(prefix="amqpbroker-check-") as tmp:
            store = SQLiteStore(tmp)
            try:
                Broker(cfg, store)
                try:
                    store.sync_blocking()
                except Exception as e:
                    raise config_mod.ConfigError(
                        f"definitions: the store cannot keep them "
                        f"({type(e).__name__}: {' '.join(str(e).split())})") from None
            finally:
                store.db.close()
    except config_mod.ConfigError as e:
        raise config_mod.ConfigError(f"{path}: {e}") from None


def config_error_of(exc: BaseException) -> config_mod.ConfigError | None:
    """The configuration error inside ``exc``, unwrapping exception groups (a task group
    wraps what its tasks raise) and explicit causes; None when there is none."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, config_mod.ConfigError):
            return e
        todo.extend(getattr(e, "exceptions", ()))
        todo.append(e.__cause__)
    return None


def _start_error_text(e: config_mod.StartError, args) -> str:
    """Name the flag when the value came from one, else the file and key path."""
    flag = None
    if e.key.startswith("listen.hosts") and args.host:
        flag = "--host"
    elif e.key == "listen.port" and args.port is not None:
        flag = "--port"
    elif e.key == "management.port" and args.management_port is not None:
        flag = "--management-port"
    elif e.key == "prometheus.port" and args.prometheus_port is not None:
        flag = "--prometheus-port"
    elif e.key == "storage.path" and args.data_dir is not None:
        flag = "--data-dir"
    if flag:
        return f"{flag}: {e.message}"
    return f"{args.config}: {e}" if args.config else str(e)


def _http_port(text: str, flag: str = "--management-port") -> int | None:
    if text == "off":
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise config_mod.ConfigError(f"{flag}: expected 0..65535 or off, got {text!r}")
    return port


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["perf"]:  # the load tool has its own options (amqpbroker perf --help)
        import amqpbroker_perf  # a client, outside the broker package
        return amqpbroker_perf.main(argv[1:])
    parser = _Parser(prog="amqpbroker", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"amqpbroker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", help="YAML configuration file (default: built-in "
                                        "defaults, as in conf/broker.yaml)")
    serve.add_argument("--host", action="append", help="listen address (repeatable); "
                                                       "overrides listen.hosts")
    serve.add_argument("--port", type=int, help="listen port (0 = a free port); overrides "
                                                "listen.port")
    serve.add_argument("--management-port", metavar="PORT|off",
                       help="management HTTP API port (0 = a free port, off = none); "
                            "overrides management.port")
    serve.add_argument("--prometheus-port", metavar="PORT|off",
                       help="Prometheus /metrics port (0 = a free port, off = none); "
                            "overrides prometheus.port")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--data-dir", help="data directory; overrides storage.path")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    sub.add_parser("perf", help="load test any AMQP 0-9-1 broker (amqpbroker perf --help)")
    ctl.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "ctl":  # a client of a running broker: no configuration here
        return ctl.main(args)

    try:
        if args.command == "check-config":
            cfg = config_mod.load(args.file)
            _check_definitions(args.file, cfg)
            print(f"{args.file}: ok")
            return 0
        cfg = _load(args.config)
        listen = {}
        if args.host:
            config_mod.check_hosts(tuple(args.host), "--host")
            listen["hosts"] = tuple(args.host)
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise config_mod.ConfigError(f"--port: expected 0..65535, got {args.port}")
            listen["port"] = args.port
        management, prom = {}, {}
        if args.management_port is not None:
            management["port"] = _http_port(args.management_port)
        if args.prometheus_port is not None:
            prom["port"] = _http_port(args.prometheus_port, "--prometheus-port")
        if args.data_dir is not None and not args.data_dir:
            raise config_mod.ConfigError("--data-dir: expected a directory path, got ''")
        cfg = config_mod.replace(cfg, listen=listen, management=management, prometheus=prom,
                                 server={"log_level": args.log_level} if args.log_level else {},
                                 storage={"path": args.data_dir} if args.data_dir else {})
    except config_mod.ConfigError as e:
        print(f"amqpbroker: {e}", file=sys.stderr)
        return 2

    logging.basicConfig(level=cfg.server.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .server import main as serve  # imported late: check-config needs no anyio

    try:
        serve(cfg)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        e = config_error_of(exc)
        if e is None:
            raise
        if isinstance(e, config_mod.StartError):
            text = _start_error_text(e, args)
        else:  # definitions that cannot be applied at start
            text = f"{args.config}: {e}" if args.config else str(e)
        print(f"amqpbroker: {text}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
