"""``amqpbroker`` / ``python -m amqpbroker``: serve, check-config, perf."""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, config as config_mod


def _load(path: str | None) -> config_mod.Config:
    return config_mod.load(path) if path else config_mod.Config()


def _check_definitions(path: str, cfg: config_mod.Config) -> None:
    """check-config applies the definitions as serve does (on an empty broker), so a queue
    argument RabbitMQ refuses or a binding to nothing fails here too."""
    from .broker import Broker
    try:
        Broker(cfg)
    except config_mod.ConfigError as e:
        raise config_mod.ConfigError(f"{path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["perf"]:  # the load tool has its own options (amqpbroker perf --help)
        from . import perf
        return perf.main(argv[1:])
    parser = argparse.ArgumentParser(prog="amqpbroker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"amqpbroker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", help="YAML configuration file (default: built-in "
                                        "defaults, as in conf/broker.yaml)")
    serve.add_argument("--host", action="append", help="listen address (repeatable); "
                                                       "overrides listen.hosts")
    serve.add_argument("--port", type=int, help="listen port (0 = a free port); overrides "
                                                "listen.port")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--data-dir", help="data directory; overrides storage.path")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    sub.add_parser("perf", help="load test any AMQP 0-9-1 broker (amqpbroker perf --help)")
    args = parser.parse_args(argv)

    try:
        if args.command == "check-config":
            cfg = config_mod.load(args.file)
            _check_definitions(args.file, cfg)
            print(f"{args.file}: ok")
            return 0
        cfg = _load(args.config)
        listen = {}
        if args.host:
            listen["hosts"] = tuple(args.host)
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise config_mod.ConfigError(f"--port: expected 0..65535, got {args.port}")
            listen["port"] = args.port
        cfg = config_mod.replace(cfg, listen=listen,
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
    except config_mod.ConfigError as e:  # definitions that cannot be applied at start
        print(f"amqpbroker: {args.config}: {e}" if args.config else f"amqpbroker: {e}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
