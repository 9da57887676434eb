"""IO managers: where asset outputs are stored (see :mod:`flowstone.io.base`)."""

from flowstone.io.base import InputContext, IOManager, OutputContext, OutputRef
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager

__all__ = [
    "FilesystemIOManager",
    "IOManager",
    "InputContext",
    "MemoryIOManager",
    "OutputContext",
    "OutputRef",
]
