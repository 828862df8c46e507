"""The audit log in the request flow: what a request and its answer look like as records
(``kms_service/audit_records.py`` hashes and chains them; ``service/audit_log.py`` writes them).

Every authenticated path is audited, whatever the answer (a 403 too); the unauthenticated ones (sys/health,
sys/seal-status, sys/leader, the OpenAPI document) are not, as in Vault, where they bypass the audit
devices. A request that reaches its handler is recorded before it runs (``type: request``) and every
answer before it leaves (``type: response``); either failing refuses the request with a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from kms_service.audit_records import Caller, Exchange, entry, serialize
from kms_service.errors import AuditUnavailable, ConfigError
from kms_service.service.audit_log import AuditLog, DatabaseSink, FileSink, Sink, SinkUnavailable
from kms_service.settings import Settings
from kms_service.storage.database import unavailable_reason
from kms_service.web.body import PARSE_INLINE_BYTES
from kms_service.web.faults import FAULTS_KEY
from kms_service.web.framework import Call
from kms_service.web.incoming import IncomingRequest
from kms_service.web.replies import Reply
from kms_service.web.routing import KMS_KEY, ROUTER_KEY

log = logging.getLogger(__name__)

AUDIT_KEY = "audit_log"  # the app's AuditLog
REQUEST_ID_KEY = "kms_request_id"  # a request's id

REFUSED = "audit log unavailable: no audit device could record the request"

_OPERATIONS = {"GET": "read", "HEAD": "read", "POST": "update", "PUT": "update", "DELETE": "delete", "LIST": "list"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def audited(call: Call | None) -> bool:
    return call is None or call.path is None or call.path.authenticated or call.path.audited


def exchange(request: IncomingRequest, call: Call | None, request_id: str) -> Exchange:
    method = (call.method if call is not None and call.method else request.method).upper()
    operation = _OPERATIONS.get(method, method.lower())
    if call is not None and call.existed is False:
        operation = "create"  # a POST whose target did not exist (Vault's existence check)
    path = request.path[len("/v1/") :] if request.path.startswith("/v1/") else request.path
    caller = None
    principal = call.principal if call is not None else None
    if principal is not None:
        info = principal.info
        caller = Caller(
            token=principal.token,
            accessor=info.accessor,
            display_name=info.display_name,
            policies=tuple(info.policies),
            token_ttl=info.ttl,
            issue_time=info.created_at.isoformat().replace("+00:00", "Z"),
        )
    mount_point, mount_type, namespace = None, None, None
    if call is not None and call.namespace:
        space = call.kms.mounts.known_namespace(call.namespace)
        namespace = (space.id if space is not None else "", call.namespace)
    if call is not None and call.mount is not None:
        mount_point, mount_type = f"{call.mount.path.removeprefix(call.namespace)}/", "transit"
    elif path.startswith("sys/"):
        mount_point, mount_type = "sys/", "system"
    elif path.startswith("auth/token/"):
        mount_point, mount_type = "auth/token/", "token"
    return Exchange(
        request_id=request_id,
        time=_now(),
        operation=operation,
        path=path,
        remote_address=request.remote,
        caller=caller,
        mount_point=mount_point,
        mount_type=mount_type,
        data=call.body if call is not None else None,
        namespace=namespace,
    )


# Past this many batch items (or a body parsed off the event loop), a record is built off it too.
LARGE_BATCH_ITEMS = 256


def _large(request: IncomingRequest, call: Call | None) -> bool:
    items = call.body.get("batch_input") if call is not None and call.body is not None else None
    return (request.content_length or 0) > PARSE_INLINE_BYTES or (
        isinstance(items, list) and len(items) > LARGE_BATCH_ITEMS
    )


async def _serialized(request: IncomingRequest, call: Call | None, build: Callable[[], dict[str, Any]]) -> bytes:
    """A record as its JSON line; a large request's (thousands of values to hash) in the heavy lane, as its
    body was parsed, so it never holds the event loop."""
    if not _large(request, call):
        return serialize(build())
    return await request.app[ROUTER_KEY].heavy_lane.run(lambda: serialize(build()))


async def record_request(audit: AuditLog, request_id: str, call: Call) -> None:
    """The router's hook: the request record, before the handler runs; refused when no sink takes it."""
    if not audited(call):
        return
    found = exchange(call.request, call, request_id)
    line = await _serialized(call.request, call, lambda: entry(audit.keys, "request", found))
    if not audit.record(line):
        raise AuditUnavailable(REFUSED)


async def record_response(
    audit: AuditLog,
    request: IncomingRequest,
    call: Call | None,
    request_id: str,
    status: int,
    reply: Reply | None,
    error: str,
) -> bool:
    """The response record, before the answer leaves. False: no sink took it (the caller refuses)."""
    response: dict[str, Any] | None = None
    if reply is not None and reply.body is None:
        response = dict(reply.data) if reply.data is not None else None
        if reply.auth is not None:
            response = {**(response or {}), "auth": reply.auth}
        if reply.wrap_info is not None:
            response = {"wrap_info": reply.wrap_info}  # its token is hashed as every string is
    found = exchange(request, call, request_id)
    line = await _serialized(
        request, call, lambda: entry(audit.keys, "response", found, response=response, status=status, error=error)
    )
    return audit.record(line)


def _sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.audit_file is not None:
        sinks.append(FileSink(settings.audit_file))
    if settings.audit_db:
        sinks.append(DatabaseSink(settings.audit_db_queue))
    return sinks


def audit_context(settings: Settings):
    """A cleanup_ctx entry: open the sinks after the service (the audit key is in its keyring), flush them
    every ``audit_flush_interval``, and end the chains before the service closes."""

    async def context(app: MutableMapping[Any, Any]) -> AsyncIterator[None]:
        sinks = _sinks(settings)
        if not sinks:
            yield
            return
        kms = app[KMS_KEY]
        audit = AuditLog(kms.audit_keys, kms.db, sinks, kms.node_id)
        for sink in sinks:
            if isinstance(sink, FileSink):
                try:
                    sink.open()  # a path that cannot be written stops the start, in one line
                except SinkUnavailable as exc:
                    raise ConfigError(f"--audit-file: {exc}") from None
        app[AUDIT_KEY] = audit
        router = app[ROUTER_KEY]
        router.on_request = lambda call: record_request(audit, call.request[REQUEST_ID_KEY], call)  # a coroutine
        faults = app[FAULTS_KEY]

        async def flush_forever() -> None:
            while True:
                await asyncio.sleep(settings.audit_flush_interval)
                try:
                    # Shielded: stopping never cuts a flush in half (close waits for it, then flushes the rest).
                    await asyncio.shield(audit.flush())
                except Exception as exc:
                    reason = unavailable_reason(exc) or type(exc).__name__
                    faults.log(logging.ERROR, "audit-flush", "audit log: cannot flush to the database: %s", reason)

        task = asyncio.create_task(flush_forever(), name="audit flush")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        router.on_request = None
        await audit.close()

    return context
