"""The job engine: jobs, their persistence and the runners' contract."""

from .engine import Engine, JobControl, Runner
from .jobs import FileStatus, FileTask, Job, JobError, JobStatus
from .store import Store

__all__ = [
    "Engine",
    "FileStatus",
    "FileTask",
    "Job",
    "JobControl",
    "JobError",
    "JobStatus",
    "Runner",
    "Store",
]
