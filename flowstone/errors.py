"""FlowStone's exceptions and the ``Result`` type (invariant I16).

Every error FlowStone raises is a :class:`FlowStoneError`. Each carries structured fields (``type``,
``message``, ``asset``, ``partition``, ``run_id``, ``retryable``, ``context``) so that the step runner
can record it as JSON in ``flowstone_materializations.error`` and a caller can branch on it without
parsing messages.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

__all__ = [
    "ApprovalAlreadyDecidedError",
    "ApprovalNotFoundError",
    "ApprovalPendingError",
    "ApprovalRejectedError",
    "ApprovalTimedOutError",
    "CheckBlockedError",
    "ConfigurationError",
    "DefinitionError",
    "DependencyFailedError",
    "DependencyNotReadyError",
    "EmbeddedPostgresUnavailableError",
    "ExecutionError",
    "FlowStoneError",
    "IOManagerError",
    "InvalidIdentifierError",
    "InvalidPartitionError",
    "InvalidTransitionError",
    "JobArgsError",
    "MigrationError",
    "NotAllowedError",
    "OutputDecodeError",
    "OutputNotSerializableError",
    "ResourceError",
    "Result",
    "RunAbandonedError",
    "RunConfigMissingError",
    "StepLostError",
    "StoreError",
    "UnknownAssetError",
    "UnknownScheduleError",
]

T = TypeVar("T")
U = TypeVar("U")


class FlowStoneError(Exception):
    """Base of every FlowStone error.

    ``retryable`` says whether running the same step again may succeed (a dropped connection) or
    cannot (an unknown asset name). Subclasses set a class default; a call site may override it.
    """

    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        asset: str | None = None,
        partition: str | None = None,
        run_id: str | None = None,
        retryable: bool | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.asset = asset
        self.partition = partition
        self.run_id = run_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.context: dict[str, Any] = dict(context or {})

    @property
    def type(self) -> str:
        """The error's type name, e.g. ``"InvalidPartitionError"`` (stable, stored in SQL)."""
        return type(self).__name__

    def __str__(self) -> str:
        where = [
            f"{label}={value}"
            for label, value in (
                ("asset", self.asset),
                ("partition", self.partition),
                ("run_id", self.run_id),
            )
            if value is not None
        ]
        suffix = f" ({', '.join(where)})" if where else ""
        # The type is not repeated here: Python's traceback and the CLI put it in front once.
        return f"{self.message}{suffix}"

    def describe(self) -> str:
        """``Type: message (location)``, the one-line form the CLI prints."""
        return f"{self.type}: {self}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description, the form stored in ``flowstone_materializations.error``."""
        return {
            "type": self.type,
            "message": _json_safe(self.message),
            "asset": _json_safe(self.asset),
            "partition": _json_safe(self.partition),
            "run_id": _json_safe(self.run_id),
            "retryable": self.retryable,
            "context": _json_safe(self.context),
        }


def _json_safe(value: Any) -> Any:
    """Context values are meant to be JSON already; anything else is stored as its repr.

    Postgres ``jsonb`` refuses NaN/Infinity and the NUL character, and a failure that cannot be
    recorded would leave its step ``running`` (I12): non-finite floats become strings and NUL
    characters become the visible text ``\\x00``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, Mapping):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return _json_safe(repr(value))


class ConfigurationError(FlowStoneError):
    """Settings are missing or contradict each other."""


class EmbeddedPostgresUnavailableError(ConfigurationError):
    """No database URL was given and the embedded Postgres cannot be used."""


class DefinitionError(FlowStoneError):
    """Asset definitions are invalid. ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: list[str], **kwargs: Any) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{count} {noun} in the definitions:\n{lines}", **kwargs)


class UnknownAssetError(FlowStoneError):
    """A name from outside (job args, SQL, CLI) is not an asset of these Definitions (I3)."""


class InvalidPartitionError(FlowStoneError):
    """A partition value or encoded key is not valid for the asset (I6, I17)."""


class InvalidIdentifierError(FlowStoneError):
    """A configured SQL identifier or queue name failed the allow-list (I5)."""


class ResourceError(FlowStoneError):
    """A resource could not be configured or set up."""


class IOManagerError(FlowStoneError):
    """An IO manager failed to store, load or delete an output."""

    default_retryable = True


class OutputNotSerializableError(IOManagerError):
    """An asset returned a value the typed JSON codec cannot encode."""

    default_retryable = False


class OutputDecodeError(IOManagerError):
    """A stored output could not be decoded; nothing was guessed."""

    default_retryable = False


class DependencyFailedError(FlowStoneError):
    """An upstream step of the run failed or was rejected, so this step was skipped."""


class CheckBlockedError(DependencyFailedError):
    """An upstream step succeeded but failed a blocking asset check, so this step was skipped."""


class DependencyNotReadyError(FlowStoneError):
    """An input has no succeeded materialization to read."""


class ExecutionError(FlowStoneError):
    """The asset function raised. The original exception is ``__cause__``; its traceback is kept."""

    default_retryable = True

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        asset: str | None = None,
        partition: str | None = None,
        run_id: str | None = None,
    ) -> ExecutionError:
        """Wrap a user exception, keeping its type, message and formatted traceback."""
        error = cls(
            f"{type(exc).__name__}: {exc}",
            asset=asset,
            partition=partition,
            run_id=run_id,
            context={
                "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "traceback": "".join(traceback.format_exception(exc)),
            },
        )
        error.__cause__ = exc
        return error


class StoreError(FlowStoneError):
    """The metadata store failed (connection lost, serialization failure, constraint)."""

    default_retryable = True


class InvalidTransitionError(StoreError):
    """A guarded status transition was refused (e.g. ``succeeded`` back to ``running``)."""

    default_retryable = False


class StepLostError(StoreError):
    """A step's job ended without recording the step's outcome (its worker lost the database, or the
    server restarted in between): the recovery sweep retries the step or fails it with this."""


class RunAbandonedError(FlowStoneError):
    """The process running an in-process run ended before its steps did (killed, or crashed)."""


class MigrationError(FlowStoneError):
    """Schema migrations are inconsistent (gap, duplicate, edited file, newer database)."""


class JobArgsError(FlowStoneError):
    """A queue job's args do not match the strict three-key schema (I1)."""


class RunConfigMissingError(FlowStoneError):
    """A job names a run whose row (and so config) does not exist (I1): never a silent default."""


class ApprovalAlreadyDecidedError(FlowStoneError):
    """An approval was already approved, rejected or timed out."""


class ApprovalNotFoundError(FlowStoneError):
    """No approval has this id."""


class ApprovalRejectedError(FlowStoneError):
    """The step's approval was rejected (by a person, or by its timeout): the step is ``rejected``."""


class ApprovalTimedOutError(FlowStoneError):
    """The step's approval timed out with ``on_timeout="fail"``: the step is ``failed``."""


class ApprovalPendingError(FlowStoneError):
    """Raised by ``RunResult.unwrap()`` (and ``materialize(raise_on_error=True)``) when steps of the
    run wait for approval. Waiting is a state, not a failure (I13): nothing else went wrong."""


class UnknownScheduleError(FlowStoneError):
    """No schedule or sensor has this name."""


class NotAllowedError(FlowStoneError):
    """The actor is not among the approvers of this approval."""


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """The outcome of an operation: a value, or a :class:`FlowStoneError`.

    ``Result.success(3).unwrap() == 3``; ``Result.err(error).unwrap()`` raises ``error`` itself.
    """

    ok: bool
    value: T | None = None
    error: FlowStoneError | None = None

    @classmethod
    def success(cls, value: T) -> Result[T]:
        """A successful result holding ``value``."""
        return cls(ok=True, value=value)

    @classmethod
    def err(cls, error: FlowStoneError) -> Result[T]:
        """A failed result holding ``error``."""
        return cls(ok=False, error=error)

    def unwrap(self) -> T:
        """The value, or raise the error (a :class:`FlowStoneError` subclass)."""
        if self.ok:
            return self.value  # type: ignore[return-value]  # None is a valid T for success(None)
        return _raise(self.error)

    def map(self, fn: Callable[[T], U]) -> Result[U]:
        """``fn(value)`` as a success when this is a success; this failure unchanged otherwise.
        ``fn`` raising is not caught: it is a bug in ``fn``, not an outcome."""
        if self.ok:
            return Result.success(fn(self.value))  # type: ignore[arg-type]  # see unwrap
        return Result.err(self._error())

    def flat_map(self, fn: Callable[[T], Result[U]]) -> Result[U]:
        """``fn(value)`` (itself a ``Result``) when this is a success; this failure otherwise:
        chains operations that may each fail."""
        if self.ok:
            return fn(self.value)  # type: ignore[arg-type]  # see unwrap
        return Result.err(self._error())

    def _error(self) -> FlowStoneError:
        if self.error is None:
            return FlowStoneError("Result has ok=False but no error")
        return self.error


def _raise(error: FlowStoneError | None) -> NoReturn:
    if error is None:  # only reachable if someone builds Result(ok=False) by hand
        raise FlowStoneError("Result has ok=False but no error")
    raise error
