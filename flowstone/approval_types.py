"""Value types of approval gates (I13): what an asset asks, and what it gets back.

Kept apart from :mod:`flowstone.approvals` (the API that decides) so that the low layers
(definitions, context) can name them without importing the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from flowstone import codec, errors

__all__ = ["ApprovalDecision", "ApprovalGate", "ApprovalPending", "ApprovalRequest", "OnTimeout"]

OnTimeout = Literal["reject", "approve", "fail"]
_ON_TIMEOUT = ("reject", "approve", "fail")


@dataclass(frozen=True)
class ApprovalRequest:
    """What a step asks a human: a message, context, who may decide, and what happens on timeout."""

    message: str
    timeout: timedelta | None = timedelta(hours=1)
    on_timeout: OnTimeout = "reject"
    context_data: Mapping[str, Any] = field(default_factory=dict)
    approvers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, str) or not self.message.strip():
            raise errors.DefinitionError(["an approval needs a non-empty message"])
        if self.on_timeout not in _ON_TIMEOUT:
            raise errors.DefinitionError(
                [f"on_timeout must be one of {', '.join(_ON_TIMEOUT)}, not {self.on_timeout!r}"]
            )
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise errors.DefinitionError([f"an approval timeout must be positive, got {self.timeout}"])
        data = codec.to_jsonable(dict(self.context_data))  # refuses what JSON cannot hold (I17)
        object.__setattr__(self, "context_data", data)
        if self.approvers is not None:
            names = tuple(self.approvers)
            if not names or not all(isinstance(n, str) and n for n in names):
                raise errors.DefinitionError(["approvers must be a non-empty list of names, or None"])
            object.__setattr__(self, "approvers", names)


@dataclass(frozen=True)
class ApprovalGate:
    """Declarative gate: ``@fs.asset(approval=fs.ApprovalGate(message=...))`` asks for approval
    before the asset function runs (the same as calling ``context.require_approval`` first)."""

    message: str
    timeout: timedelta | None = timedelta(hours=1)
    on_timeout: OnTimeout = "reject"
    approvers: Sequence[str] | None = None

    def request(self) -> ApprovalRequest:
        """The request this gate makes."""
        return ApprovalRequest(
            message=self.message,
            timeout=self.timeout,
            on_timeout=self.on_timeout,
            approvers=tuple(self.approvers) if self.approvers is not None else None,
        )

    def __post_init__(self) -> None:
        self.request()  # validates now, at decoration time


@dataclass(frozen=True)
class ApprovalDecision:
    """Returned by ``context.require_approval`` once the step was approved."""

    approval_id: int
    approved: bool
    decided_by: str
    decided_at: datetime
    reason: str | None


class ApprovalPending(BaseException):
    """Raised by ``require_approval`` while no decision exists: the step stops and waits.

    A ``BaseException`` so that an asset's ``except Exception`` cannot swallow it; the step runner
    catches it and records ``waiting_approval``.
    """

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__(request.message)
        self.request = request
