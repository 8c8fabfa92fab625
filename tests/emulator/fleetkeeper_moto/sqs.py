"""SQS message timers on the test clock.

moto times a message's ``DelaySeconds`` and its visibility timeout on wall
time; fleetkeeper's delayed re-trigger (``shared/src/trigger.rs``) sends
messages with ``DelaySeconds`` that a test must see arrive when it moves its
account's clock, and never before. AWS: "Delay queues let you postpone the
delivery of new messages to consumers for a number of seconds" and a
message's own ``DelaySeconds`` (0 to 900) overrides the queue's (SQS
Developer Guide, "Amazon SQS delay queues", "Amazon SQS message timers");
a received message stays invisible for the visibility timeout (SQS
Developer Guide, "Amazon SQS visibility timeout").

Here both timers read :mod:`fleetkeeper_moto.clock` for the queue's account:
a message sent with ``DelaySeconds=30`` is not received until the account's
clock has moved 30 s, and a received message comes back after its
visibility timeout on the same clock.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.sqs.models import Message, SQSBackend

from . import clock

_CURRENT = threading.local()


def _now_ms(message: Message) -> int:
    account = getattr(message, "_fk_account", None) or getattr(_CURRENT, "account", None)
    if account is None:
        import time

        return int(time.time() * 1000)
    return clock.now_ms(account)


def mark_sent(self: Message, delay_seconds: int | None = None) -> None:
    self.sent_timestamp = _now_ms(self)  # type: ignore[assignment]
    if delay_seconds:
        self.delay(delay_seconds=delay_seconds)


def change_visibility(self: Message, visibility_timeout: int) -> None:
    self.visible_at = _now_ms(self) + int(visibility_timeout) * 1000


def delay(self: Message, delay_seconds: int) -> None:
    self.delayed_until = _now_ms(self) + int(delay_seconds) * 1000


def visible(self: Message) -> bool:
    return _now_ms(self) > self.visible_at


def delayed(self: Message) -> bool:
    return _now_ms(self) < self.delayed_until


def _in_account(original: Any) -> Any:
    """Runs a backend method with its account's clock for the messages it
    creates or touches, and stamps new messages with the account."""

    def method(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        _CURRENT.account = self.account_id
        try:
            result = original(self, *args, **kwargs)
        finally:
            _CURRENT.account = None
        found = result[0] if isinstance(result, tuple) else result
        for m in found if isinstance(found, list) else [found]:
            if isinstance(m, Message):
                m._fk_account = self.account_id  # type: ignore[attr-defined]
        return result

    return method


def apply() -> list[str]:
    """Installs the patches; returns their descriptions."""
    Message.mark_sent = mark_sent  # type: ignore[method-assign]
    Message.change_visibility = change_visibility  # type: ignore[method-assign]
    Message.delay = delay  # type: ignore[method-assign]
    Message.visible = property(visible)  # type: ignore[assignment,method-assign]
    Message.delayed = property(delayed)  # type: ignore[assignment,method-assign]
    for name in ("send_message", "send_message_batch", "receive_message", "change_message_visibility"):
        setattr(SQSBackend, name, _in_account(getattr(SQSBackend, name)))
    return ["sqs: DelaySeconds and visibility timeouts on the test clock"]
