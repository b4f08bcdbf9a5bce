"""RabbitMQ's password hashes (rabbit_password and its hashing modules): a hash is
``base64(salt + H(salt + password))`` with a 4-byte salt, H named by the user's
``hashing_algorithm``, so hashes exported from RabbitMQ's definitions work unchanged.
Passwords are only ever compared here, never logged or kept beside the hash."""
from __future__ import annotations

import base64
import hashlib
import hmac

SHA256 = "rabbit_password_hashing_sha256"   # RabbitMQ's default since 3.6
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"         # before 3.6
ALGORITHMS = {SHA256: hashlib.sha256, SHA512: hashlib.sha512, MD5: hashlib.md5}
SALT = 4


def hash_password(password: str, salt: bytes, algorithm: str = SHA256) -> str:
    return base64.b64encode(salt + ALGORITHMS[algorithm](
        salt + password.encode("utf-8", "surrogateescape")).digest()).decode()


def is_hash(text: str, algorithm: str) -> bool:
    """``text`` has the shape of ``algorithm``'s hashes (salt and digest sizes)."""
    try:
        return len(base64.b64decode(text, validate=True)) == \
            SALT + ALGORITHMS[algorithm]().digest_size
    except ValueError:
        return False


def default_algorithm(rabbit_version) -> str:
    """A definitions user without ``hashing_algorithm``: MD5 from RabbitMQ 3.0-3.5 files,
    else the default (rabbit_auth_backend_internal's hashing_algorithm/2)."""
    v = str(rabbit_version or "")
    return MD5 if any(v.startswith(f"3.{i}.") for i in range(6)) else SHA256


def check(user, password: str) -> bool:
    """The password is the user's: its hash (salted, by its algorithm), else the plain
    text from the configuration file.  Constant-time comparisons."""
    if user.password_hash:
        algorithm = getattr(user, "hashing_algorithm", SHA256)
        if algorithm not in ALGORITHMS:
            return False
        try:
            raw = base64.b64decode(user.password_hash)
        except ValueError:
            return False
        return hmac.compare_digest(hash_password(password, raw[:SALT], algorithm).encode(),
                                   user.password_hash.encode("utf-8", "surrogateescape"))
    return user.password is not None and hmac.compare_digest(
        user.password.encode("utf-8", "surrogateescape"),
        password.encode("utf-8", "surrogateescape"))
