"""The configuration's errors (config.py re-exports them): one line that names the key."""
from __future__ import annotations

import typing


class ConfigError(ValueError):
    pass


class StartError(ConfigError):
    """A value that fails only when the broker starts (a host that cannot be bound, a port
    in use, a data directory it cannot use, a corrupt store).  ``key`` is the dotted key
    path (``listen.hosts[0]``, ``listen.port``, ``storage.path``); the command line names
    the flag instead when the value came from one."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def show(value: typing.Any, limit: int = 60) -> str:
    """repr() cut to one short line: a message names the value, it does not dump it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


