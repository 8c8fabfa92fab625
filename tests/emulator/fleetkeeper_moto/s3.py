"""S3 object events through EventBridge, in the shape AWS documents, recorded
for the event router.

AWS (S3 user guide, "EventBridge event message structure",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html):
``Object Created`` and ``Object Deleted`` events carry ``detail.object.key``
raw (never URL-encoded), ``etag``, ``version-id`` on versioned buckets, a
``sequencer`` that orders the events of one key, ``reason`` (the API:
``PutObject``, ``CopyObject``, ``CompleteMultipartUpload``, ``DeleteObject``,
``Lifecycle Expiration``) and, for deletions, ``deletion-type``
(``Permanently Deleted`` / ``Delete Marker Created``); ``time`` is an
ISO-8601 timestamp. Events are sent only for buckets with EventBridge
notifications enabled.

moto 5.2.5 sends ``time`` as a unix float, one constant ``sequencer``, the
field ``eTag``, and ``reason`` as the event category (``ObjectCreated``).
Here each event is recorded in the documented shape, its ``time`` on the
account's test clock, and also handed to moto's EventBridge rules as before.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import defaultdict
from typing import Any

from moto.s3 import notifications

from . import clock

LOCK = threading.Lock()
#: account -> events, oldest first
EVENTS: dict[str, list[dict[str, Any]]] = defaultdict(list)
_SEQUENCE = itertools.count(1)

REASONS = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "POST Object",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete": "DeleteObject",
    "s3:ObjectRemoved:DeleteMarkerCreated": "DeleteObject",
    "s3:LifecycleExpiration:Delete": "Lifecycle Expiration",
    "s3:LifecycleExpiration:DeleteMarkerCreated": "Lifecycle Expiration",
}

_original = notifications._send_event_bridge_message


def event_for(account_id: str, bucket: Any, event_name: str, key: Any) -> dict[str, Any] | None:
    name = str(getattr(event_name, "value", event_name))
    reason = REASONS.get(name)
    if reason is None:
        return None  # restores, tagging, ACLs: not content changes
    created = reason not in ("DeleteObject", "Lifecycle Expiration")
    obj: dict[str, Any] = {"key": key.name, "sequencer": f"{next(_SEQUENCE):018X}"}
    if created:
        obj["size"] = key.size
        obj["etag"] = key.etag.replace('"', "")
    version = getattr(key, "version_id", None)
    if version and version != "null":
        obj["version-id"] = version
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket.name},
        "object": obj,
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": account_id,
        "source-ip-address": "203.0.113.10",
        "reason": reason,
    }
    if not created:
        marker = name.endswith("DeleteMarkerCreated")
        detail["deletion-type"] = "Delete Marker Created" if marker else "Permanently Deleted"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created" if created else "Object Deleted",
        "source": "aws.s3",
        "account": account_id,
        "time": clock.iso(clock.now(account_id))[:19] + "Z",
        "region": bucket.region_name,
        "resources": [f"arn:aws:s3:::{bucket.name}"],
        "detail": detail,
    }


def send_event_bridge_message(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
    event = event_for(account_id, bucket, event_name, key)
    if event is not None:
        with LOCK:
            EVENTS[account_id].append(event)
    _original(account_id, bucket, event_name, key)


def events(account_id: str, after: int, bucket: str | None) -> tuple[list[dict[str, Any]], int]:
    """The account's events from position ``after`` on, and the next position."""
    with LOCK:
        log = EVENTS[account_id]
        new = log[after:]
        return [e for e in new if bucket is None or e["detail"]["bucket"]["name"] == bucket], len(log)


def get_bucket_versioning(self: Any) -> Any:
    """GetBucketVersioning as AWS answers it (S3 API reference,
    GetBucketVersioning, https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html):
    the root element is ``VersioningConfiguration``, with a ``Status`` only
    once versioning was ever configured ("If the bucket has never been
    versioned, returns <VersioningConfiguration .../>"). moto 5.2.5 answers
    a never-versioned bucket with an empty ``GetBucketVersioningResponse``,
    which the AWS SDK for Rust refuses to parse."""
    status = self.backend.get_bucket_versioning(self.bucket_name)
    self.data["Action"] = "GetBucketVersioning"
    inner = f"<Status>{status}</Status>" if status else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</VersioningConfiguration>'
    )
    return 200, {"Content-Type": "application/xml"}, body


_original_get_notification: Any = None


def get_bucket_notification(self: Any) -> Any:
    """GetBucketNotificationConfiguration as AWS answers it (S3 API
    reference, GetBucketNotificationConfiguration,
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketNotificationConfiguration.html):
    the root element is ``NotificationConfiguration`` (empty when nothing is
    configured), with ``EventBridgeConfiguration`` once EventBridge delivery
    is on. moto 5.2.5 answers an empty configuration with an empty
    ``GetBucketNotificationResponse`` (the AWS SDK for Rust refuses to parse
    it), and leaves ``EventBridgeConfiguration`` out when it is all there is."""
    status, headers, body = _original_get_notification(self)
    text = body.decode() if isinstance(body, bytes) else str(body)
    config = self.backend.get_bucket_notification_configuration(self.bucket_name)
    bridge = config is not None and config.event_bridge is not None
    root = "NotificationConfiguration"
    if f"<{root}" not in text:
        inner = "<EventBridgeConfiguration></EventBridgeConfiguration>" if bridge else ""
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</{root}>'
        )
    elif bridge and "EventBridgeConfiguration" not in text:
        element = "<EventBridgeConfiguration></EventBridgeConfiguration>"
        if f"</{root}>" in text:
            text = text.replace(f"</{root}>", f"{element}</{root}>", 1)
        else:
            # An otherwise empty configuration, answered self-closed.
            start = text.find(f"<{root}")
            end = text.find("/>", start)
            text = text[:end] + ">" + element + f"</{root}>" + text[end + 2 :]
    return status, headers, text


def apply() -> list[str]:
    from moto.s3.responses import S3Response

    global _original_get_notification
    notifications._send_event_bridge_message = send_event_bridge_message
    S3Response.get_bucket_versioning = get_bucket_versioning
    _original_get_notification = S3Response.get_bucket_notification
    S3Response.get_bucket_notification = get_bucket_notification
    return [
        "s3: EventBridge object events in the documented shape, recorded for the event router",
        "s3: GetBucketVersioning answers VersioningConfiguration, as AWS does",
        "s3: GetBucketNotificationConfiguration answers EventBridgeConfiguration, as AWS does",
    ]
