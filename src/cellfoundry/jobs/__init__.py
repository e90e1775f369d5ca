"""Durable jobs: the queue interface (local workers or Celery), applications and the run engine."""

from cellfoundry.jobs.applications import (
    APPLICATIONS,
    ApplicationSpec,
    get_application,
    register_application,
)
from cellfoundry.jobs.queue import Queue, QueueUnavailable, get_queue

__all__ = [
    "APPLICATIONS",
    "ApplicationSpec",
    "Queue",
    "QueueUnavailable",
    "get_application",
    "get_queue",
    "register_application",
]
