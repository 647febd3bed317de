"""The distillation DAG, built once and parameterised per benchmark: compile, run locally, submit."""

from pipelines.dag import build_pipeline, compile_pipeline
from pipelines.local import RunResult, run_local

__all__ = ["RunResult", "build_pipeline", "compile_pipeline", "run_local"]
