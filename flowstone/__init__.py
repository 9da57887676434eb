"""FlowStone: asset-first data orchestration on Postgres.

Declare assets with :func:`asset`, register them in :class:`Definitions`, and run them with a
:class:`FlowStone` runtime::

    import flowstone as fs

    @fs.asset
    def numbers() -> list[int]:
        return [1, 2, 3]

    @fs.asset
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    runtime = fs.FlowStone(fs.Definitions(assets=[numbers, total]), store="memory")
    assert runtime.materialize("total", with_upstream=True).value("total") == 6
"""

from flowstone._version import __version__
from flowstone.approval_types import ApprovalDecision, ApprovalGate
from flowstone.asset_checks import AssetCheckDef, CheckResult, asset_check
from flowstone.capture import StepLogSettings
from flowstone.context import AssetContext
from flowstone.definitions import AssetDef, Definitions, RetryPolicy, asset
from flowstone.dynamic_partitions import DynamicPartitions
from flowstone.errors import (
    ApprovalAlreadyDecidedError,
    ApprovalNotFoundError,
    ApprovalPendingError,
    ApprovalRejectedError,
    ApprovalTimedOutError,
    CheckBlockedError,
    ConfigurationError,
    DefinitionError,
    DependencyFailedError,
    DependencyNotReadyError,
    EmbeddedPostgresUnavailableError,
    ExecutionError,
    FlowStoneError,
    InvalidIdentifierError,
    InvalidPartitionError,
    InvalidTransitionError,
    IOManagerError,
    JobArgsError,
    MigrationError,
    NotAllowedError,
    OutputDecodeError,
    OutputNotSerializableError,
    ResourceError,
    Result,
    RunAbandonedError,
    RunConfigMissingError,
    StepLostError,
    StoreError,
    UnknownAssetError,
    UnknownScheduleError,
)
from flowstone.io import (
    DuckDBIOManager,
    FilesystemIOManager,
    IOManager,
    MemoryIOManager,
    OutputRef,
    ParquetIOManager,
    PostgresIOManager,
)
from flowstone.lineage import ImpactRow, LineageNode
from flowstone.partitions import (
    AllPartitions,
    DailyPartitions,
    HourlyPartitions,
    IdentityMapping,
    MonthlyPartitions,
    MultiPartitions,
    PartitionMapping,
    PartitionsDefinition,
    StaticPartitions,
    TimeWindow,
    TimeWindowOffset,
    TimeWindowRange,
    WeeklyPartitions,
)
from flowstone.pools import Pool, PoolContext, RateLimit
from flowstone.queue import RunHandle
from flowstone.resources import Resource
from flowstone.retention_policy import Retention
from flowstone.runtime import BackfillResult, FlowStone, RunConfig, RunResult
from flowstone.schedules import (
    AutomationCondition,
    PartitionFromTick,
    RunRequest,
    Schedule,
    Sensor,
    SensorContext,
    sensor,
)
from flowstone.status import ApprovalStatus, RunKind, RunStatus, StepStatus
from flowstone.store.records import Approval, Materialization, Run, StepLog
from flowstone.testing import build_asset_context

__all__ = [
    "AllPartitions",
    "Approval",
    "ApprovalAlreadyDecidedError",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalNotFoundError",
    "ApprovalPendingError",
    "ApprovalRejectedError",
    "ApprovalStatus",
    "ApprovalTimedOutError",
    "AssetCheckDef",
    "AssetContext",
    "AssetDef",
    "AutomationCondition",
    "BackfillResult",
    "CheckBlockedError",
    "CheckResult",
    "ConfigurationError",
    "DailyPartitions",
    "DefinitionError",
    "Definitions",
    "DependencyFailedError",
    "DependencyNotReadyError",
    "DuckDBIOManager",
    "DynamicPartitions",
    "EmbeddedPostgresUnavailableError",
    "ExecutionError",
    "FilesystemIOManager",
    "FlowStone",
    "FlowStoneError",
    "HourlyPartitions",
    "IOManager",
    "IOManagerError",
    "IdentityMapping",
    "ImpactRow",
    "InvalidIdentifierError",
    "InvalidPartitionError",
    "InvalidTransitionError",
    "JobArgsError",
    "LineageNode",
    "Materialization",
    "MemoryIOManager",
    "MigrationError",
    "MonthlyPartitions",
    "MultiPartitions",
    "NotAllowedError",
    "OutputDecodeError",
    "OutputNotSerializableError",
    "OutputRef",
    "ParquetIOManager",
    "PartitionFromTick",
    "PartitionMapping",
    "PartitionsDefinition",
    "Pool",
    "PoolContext",
    "PostgresIOManager",
    "RateLimit",
    "Resource",
    "ResourceError",
    "Result",
    "Retention",
    "RetryPolicy",
    "Run",
    "RunAbandonedError",
    "RunConfig",
    "RunConfigMissingError",
    "RunHandle",
    "RunKind",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "Schedule",
    "Sensor",
    "SensorContext",
    "StaticPartitions",
    "StepLog",
    "StepLogSettings",
    "StepLostError",
    "StepStatus",
    "StoreError",
    "TimeWindow",
    "TimeWindowOffset",
    "TimeWindowRange",
    "UnknownAssetError",
    "UnknownScheduleError",
    "WeeklyPartitions",
    "__version__",
    "asset",
    "asset_check",
    "build_asset_context",
    "sensor",
]
