"""The one exception that wire/ raises for bytes it cannot make sense of."""

from __future__ import annotations


class MalformedPacket(ValueError):
    """Bytes that do not form a valid header of the kind asked for.

    ``reason`` is a short phrase naming what is wrong ("truncated IPv4 header",
    "bad IHL 3"); the stack uses it for counters and logs. Parsers raise this
    and nothing else: never IndexError or struct.error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
