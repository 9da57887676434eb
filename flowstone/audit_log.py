"""The audit log as host code sees it (``runtime.audit``): append your own events next to
FlowStone's and read them back. Event names follow the rule the table enforces."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flowstone import errors
from flowstone.store import base, records

__all__ = ["EVENT_NAME", "AuditLog"]

EVENT_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")
"""The rule of ``flowstone_audit_log.event`` (its CHECK constraint): dotted lower-case words."""


class AuditLog:
    """Append and read audit events."""

    def __init__(self, store: base.Store, actor: str) -> None:
        self._store = store
        self._actor = actor

    def record(
        self,
        event: str,
        *,
        details: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        asset: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Append ``event`` (e.g. ``"deploy.finished"``) with JSON ``details``; returns its id."""
        if not isinstance(event, str) or not EVENT_NAME.match(event):
            raise errors.ConfigurationError(
                f"audit event names are dotted lower-case words like 'deploy.finished', got {event!r}"
            )
        return self._store.audit(
            event, actor=actor or self._actor, run_id=run_id, asset=asset, details=dict(details or {})
        )

    def events(self, *, run_id: str | None = None, limit: int = 1000) -> list[records.AuditEvent]:
        """Events in id order (FlowStone's and the host's), of one run when given."""
        return self._store.audit_events(run_id=run_id, limit=limit)
