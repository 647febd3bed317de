"""The distillation DAG, built once and parameterised per benchmark: compile, run locally, submit."""

from pipelines.dag import build_pipeline, compile_pipeline
from pipelines.local import RunResult, run_local
from pipelines.remote import RemoteError, list_schedules, resolve_host, schedule, submit

__all__ = ["RemoteError", "RunResult", "build_pipeline", "compile_pipeline", "list_schedules", "resolve_host",
           "run_local", "schedule", "submit"]
