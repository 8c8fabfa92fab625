"""An AWS-call recorder: every request the emulator serves, attributed to the
caller's access key (SigV4 ``Credential=<key>/<date>/<region>/<service>``).

Tests give each function its own dummy access key, so the calls of a real
bootstrap and of an in-process handler are counted per function. The
operation name comes from the request as AWS would read it: ``X-Amz-Target``
(JSON protocols), ``Action`` (query protocols: EC2, Auto Scaling, ELB), or
the service's REST routes from botocore's model (S3, EFS).
"""

from __future__ import annotations

import functools
import io
import re
import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import botocore.session

CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

LOCK = threading.Lock()
#: (access key, service, operation, HTTP status class) -> count
CALLS: Counter[tuple[str, str, str, str]] = Counter()

#: (caller tag, signing name, operation) of every call ever served, across
#: accounts and never forgotten: what the permission check compares with
#: each function's manifest.
SEEN: set[tuple[str, str, str]] = set()

#: SigV4 signing names -> botocore service names, where they differ.
SIGNING_TO_SERVICE = {"elasticfilesystem": "efs", "elasticloadbalancing": "elbv2", "events": "events"}


@functools.cache
def rest_routes(service: str) -> list[tuple[str, re.Pattern[str], frozenset[str], int, str]]:
    """(method, path regex, required query keys, specificity, operation) of a REST service."""
    model = botocore.session.get_session().get_service_model(service)
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = http.get("requestUri", "/")
        path, _, query = uri.partition("?")
        required = frozenset(q.split("=")[0] for q in query.split("&") if q)
        pattern = ""
        literal = 0
        for part in re.split(r"(\{[^}]+\})", path):
            if part.startswith("{"):
                pattern += ".+" if part.endswith("+}") else "[^/]+"
            else:
                pattern += re.escape(part)
                literal += len(part)
        routes.append((http.get("method", "GET"), re.compile(f"^{pattern}/?$"), required, literal * 10 + len(required), name))
    return routes


def rest_operation(service: str, method: str, path: str, query: dict[str, list[str]]) -> str:
    best = None
    for m, pattern, required, score, name in rest_routes(service):
        if m == method and pattern.match(path) and required <= set(query):
            if best is None or score > best[0]:
                best = (score, name)
    return best[1] if best else f"{method} {path}"


def operation(environ: dict[str, Any], service: str) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.split(".")[-1]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if "Action" in query:
        return query["Action"][0]
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        # Query protocols post a form: read it, then put it back for moto.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        form = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0]
    name = SIGNING_TO_SERVICE.get(service, service)
    try:
        op = rest_operation(name, environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"), query)
    except Exception:  # an unknown service model: say what was asked
        return f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
    # PutObject and CopyObject share a route; a copy names its source.
    if op == "CopyObject" and "HTTP_X_AMZ_COPY_SOURCE" not in environ:
        return "PutObject"
    return op


def caller(environ: dict[str, Any]) -> tuple[str, str] | None:
    """The access key and signing service of a SigV4-signed request."""
    match = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return None
    return match.group(1), match.group(3)


#: The caller of the request this thread is serving (werkzeug serves each
#: request on one thread, start to end).
_CURRENT = threading.local()


def set_current(key: str | None) -> None:
    _CURRENT.key = key


def current_tag() -> str | None:
    """The caller tag (``TESTER``, ``CBSYNC``, ...) of the request being served."""
    key = getattr(_CURRENT, "key", None)
    return key[-6:] if key else None


def record(key: str, service: str, op: str, status: str) -> None:
    with LOCK:
        CALLS[(key, service, op, status)] += 1
        SEEN.add((key[-6:], service, op))


def seen() -> list[dict[str, str]]:
    """Every (caller tag, service, operation) served since the start."""
    with LOCK:
        return [{"tag": t, "service": s, "operation": o} for t, s, o in sorted(SEEN)]


def calls(key_prefix: str) -> list[dict[str, Any]]:
    """The calls of every key starting with ``key_prefix``."""
    with LOCK:
        rows = [
            {"key": k, "service": s, "operation": o, "status": st, "count": n}
            for (k, s, o, st), n in sorted(CALLS.items())
            if k.startswith(key_prefix)
        ]
    return rows


def forget(key_prefix: str) -> int:
    with LOCK:
        gone = [k for k in CALLS if k[0].startswith(key_prefix)]
        for k in gone:
            del CALLS[k]
    return len(gone)
