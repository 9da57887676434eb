"""IO managers: where asset outputs are stored (see :mod:`flowstone.io.base`)."""

from flowstone.io.base import (
    InputContext,
    IOManager,
    OutputContext,
    OutputRef,
    PreparedOutput,
    TransactionalIOManager,
)
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager
from flowstone.io.postgres import PostgresIOManager

__all__ = [
    "FilesystemIOManager",
    "IOManager",
    "InputContext",
    "MemoryIOManager",
    "OutputContext",
    "OutputRef",
    "PostgresIOManager",
    "PreparedOutput",
    "TransactionalIOManager",
]
