"""Queue types (issue 9): the classic queue for now."""
from .classic import READY, UNACKED, GONE, Consumer, Queue, QueueArgs, QueuedMessage

__all__ = ["READY", "UNACKED", "GONE", "Consumer", "Queue", "QueueArgs", "QueuedMessage"]
