"""IO managers: where asset outputs are stored (see :mod:`flowstone.io.base`)."""

from flowstone.io.base import (
    InputContext,
    IOManager,
    OutputContext,
    OutputRef,
    PreparedOutput,
    TransactionalIOManager,
)
from flowstone.io.duckdb_io import DuckDBIOManager
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager
from flowstone.io.parquet import ParquetIOManager
from flowstone.io.postgres import PostgresIOManager

__all__ = [
    "DuckDBIOManager",
    "FilesystemIOManager",
    "IOManager",
    "InputContext",
    "MemoryIOManager",
    "OutputContext",
    "OutputRef",
    "ParquetIOManager",
    "PostgresIOManager",
    "PreparedOutput",
    "TransactionalIOManager",
]
