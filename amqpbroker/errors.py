"""Reply-code exceptions.

Raise these anywhere below the connection; ``connection.py`` holds the one mapping that
turns them into ``Channel.Close`` (soft) or ``Connection.Close`` (hard).  Texts follow
RabbitMQ's wording, ``"<NAME> - <explanation>"``, because clients and people grep for them.
"""
from __future__ import annotations


class AMQPError(Exception):
    code: int = 541
    name: str = "INTERNAL_ERROR"
    hard: bool = True

    def __init__(self, explanation: str = "", class_id: int = 0, method_id: int = 0):
        super().__init__(explanation)
        self.explanation = explanation
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        text = f"{self.name} - {self.explanation}" if self.explanation else self.name
        encoded = text.encode("utf-8", "surrogateescape")  # names may hold any bytes
        if len(encoded) > 255:  # a shortstr: as RabbitMQ, the first 252 bytes and "..."
            text = (encoded[:252] + b"...").decode("utf-8", "surrogateescape")
        return text


class SoftError(AMQPError):
    """Closes only the channel."""

    hard = False


class HardError(AMQPError):
    """Closes the whole connection."""

    hard = True



class AccessRefused(SoftError):
    code, name = 403, "ACCESS_REFUSED"


class NotFound(SoftError):
    code, name = 404, "NOT_FOUND"


class ResourceLocked(SoftError):
    code, name = 405, "RESOURCE_LOCKED"


class PreconditionFailed(SoftError):
    code, name = 406, "PRECONDITION_FAILED"


class ConnectionForced(HardError):
    code, name = 320, "CONNECTION_FORCED"


class FrameError(HardError):
    code, name = 501, "FRAME_ERROR"


class SyntaxError_(HardError):
    code, name = 502, "SYNTAX_ERROR"


class CommandInvalid(HardError):
    code, name = 503, "COMMAND_INVALID"


class ChannelError(HardError):
    code, name = 504, "CHANNEL_ERROR"


class UnexpectedFrame(HardError):
    code, name = 505, "UNEXPECTED_FRAME"


class ResourceError(HardError):
    code, name = 506, "RESOURCE_ERROR"


class NotAllowed(HardError):
    code, name = 530, "NOT_ALLOWED"


class NotImplemented_(HardError):
    code, name = 540, "NOT_IMPLEMENTED"


class InternalError(HardError):
    code, name = 541, "INTERNAL_ERROR"


class AccessRefusedHard(HardError):
    """403 on channel 0 (login or vhost access): closes the connection."""

    code, name = 403, "ACCESS_REFUSED"

