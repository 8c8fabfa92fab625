"""Atomic item writes for moto's DynamoDB backend.

DynamoDB applies each write to an item atomically: a conditional
``UpdateItem`` evaluates its condition and applies its update as one step, and
concurrent writes to one item are serialized. moto's server handles requests
on threads and its backend takes no lock, so two concurrent
``UpdateItem``\\ s can both read the item before either writes it: a counter
incremented by 16 concurrent ``ADD`` updates with a condition and
``if_not_exists`` ended at 15 in about one round in ten. This serializes the
backend's writes (and the reads that back conditional writes) behind one lock.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from moto.dynamodb.models import DynamoDBBackend

LOCK = threading.RLock()

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item", "get_item")


def serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with LOCK:
            return method(*args, **kwargs)

    return wrapper


def apply() -> list[str]:
    for name in WRITES:
        setattr(DynamoDBBackend, name, serialized(getattr(DynamoDBBackend, name)))
    return ["dynamodb: writes to items are atomic under concurrency"]
