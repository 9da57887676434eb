"""The durable queue on Procrastinate, in three modules:

- :mod:`~flowstone.queue.jobs`: job args, task names, retry signals and strategy;
- :mod:`~flowstone.queue.client`: submit, backfill, :class:`RunHandle`, the enqueuer;
- :mod:`~flowstone.queue.worker`: the ``flowstone:run_step`` task, maintenance tasks, the App.

This package imports only ``jobs`` and ``client``: the worker imports :mod:`flowstone.automation`,
which submits through the client.
"""

from flowstone.queue.client import Enqueuer, RunHandle
from flowstone.queue.jobs import DEFAULT_QUEUE, TASK_NAME, JobArgs

__all__ = ["DEFAULT_QUEUE", "TASK_NAME", "Enqueuer", "JobArgs", "RunHandle"]
