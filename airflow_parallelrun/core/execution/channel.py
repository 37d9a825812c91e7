"""The worker channel: a connection between a task and its worker whose messages are JSON objects."""

from __future__ import annotations

import json
import numbers
from multiprocessing.connection import Connection
from typing import Any


class Channel(Connection):
    """A connection whose messages are JSON objects: unlike pickle, nothing received can run code."""

    def send(self, obj: Any) -> None:
        self.send_bytes(json.dumps(obj, default=_plain).encode())

    def recv(self) -> Any:
        return json.loads(self.recv_bytes())


def _plain(value: Any) -> Any:
    """Convert a number of another type (numpy's, say) for JSON; refuse anything else."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(
        f"a {type(value).__module__}.{type(value).__name__} cannot cross the worker channel, which "
        "carries JSON only; convert it to a str, number, list or dict first"
    )
