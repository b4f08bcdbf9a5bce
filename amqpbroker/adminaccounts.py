"""The admin facade's changes to vhosts, users and permissions (administrator only), as
rabbitmqctl's add_vhost / delete_vhost / add_user / set_permissions and the management
API's PUT and DELETE on them: a mixin of ``admin.Admin``, which gives it ``broker`` and
``_admin_only``.  What is made here lives until the broker stops (the config file's
vhosts, users and permissions are the ones that persist)."""
from __future__ import annotations

import re
import time

from . import errors
from .config import Permission, User


class AdminAccounts:
    def add_vhost(self, name: str) -> bool:
        """True when it is new (201), False when it existed (204).  Lives until the
        broker stops: run-time vhosts are not in the store (the config file's are)."""
        self._admin_only()
        created = name not in self.broker.vhosts
        self.broker.add_vhost(name)
        return created

    def delete_vhost(self, name: str, now: float | None = None) -> None:
        self._admin_only()
        self.broker.delete_vhost(name, time.monotonic() if now is None else now)

    def put_user(self, name: str, password: str | None = None,
                 password_hash: str | None = None, tags: tuple = (),
                 hashing_algorithm: str = "rabbit_password_hashing_sha256") -> bool:
        """Create or replace; with neither password nor hash an existing user keeps its
        own (a new one has none: it cannot log in with a password).  True when it is
        new.  Until the restart, as imported users."""
        self._admin_only()
        old = self.broker.users.get(name)
        if password is None and password_hash is None and old is not None:
            password, password_hash = old.password, old.password_hash
            hashing_algorithm = old.hashing_algorithm
        self.broker.users[name] = User(name, password=password, password_hash=password_hash,
                                       tags=tuple(tags), hashing_algorithm=hashing_algorithm,
                                       limits=dict(old.limits) if old is not None else {})
        return old is None

    def delete_user(self, name: str, now: float | None = None) -> None:
        self._admin_only()
        self.broker.delete_user(name, time.monotonic() if now is None else now)

    def set_permissions(self, vhost: str, user: str, configure: str, write: str,
                        read: str) -> bool:
        """True when new.  The patterns must compile (PreconditionFailed otherwise)."""
        self._admin_only()
        if vhost not in self.broker.vhosts:
            raise errors.NotFound(f"no vhost '{vhost}'")
        if user not in self.broker.users:
            raise errors.NotFound(f"no user '{user}'")
        for pattern in (configure, write, read):
            try:
                re.compile(pattern)
            except (re.error, TypeError):
                raise errors.PreconditionFailed(f"invalid regular expression {pattern!r}") \
                    from None
        created = (user, vhost) not in self.broker.permissions
        self.broker.set_permissions(Permission(user, vhost, configure, write, read))
        return created

    def clear_permissions(self, vhost: str, user: str) -> None:
        self._admin_only()
        if self.broker.permissions.pop((user, vhost), None) is None:
            raise errors.NotFound(f"no permissions for user '{user}' on vhost '{vhost}'")
