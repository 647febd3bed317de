"""What every component body does before and after its step: the one preamble helper.

A KFP lightweight component ships only its function's source; that body imports from here at run
time, in the task's own process (kfp.local's subprocess, or the project image on a cluster, where
``components`` is installed beside ``ptdistill``: see images/Dockerfile.*). So this module holds
plain functions over the artifacts' ``path`` and ``metadata`` and imports no kfp.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptdistill.experiments import ExperimentConfig, config_from_dict
from ptdistill.steps.common import RunInfo

#: Log line format of every task: time, logger, message.
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def step_config(config: str) -> ExperimentConfig:
    """Set up the task's logging and parse the pipeline's ``config`` JSON (raises ConfigError if invalid)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return config_from_dict(json.loads(config))


def step_inputs(config: str, run_info: Any) -> tuple[ExperimentConfig, RunInfo]:
    """:func:`step_config`, and the run-info record of the ``run_info`` artifact (written by prepare_data)."""
    return step_config(config), RunInfo.load(run_info.path)


def paths(artifacts: Mapping[str, Any]) -> dict[str, Path]:
    """Name -> local path of each artifact."""
    return {name: Path(artifact.path) for name, artifact in artifacts.items()}


def record_teacher_outputs(report: dict, outputs: Mapping[str, Any], teacher_report: Any) -> None:
    """Tag each probability output with its cache outcome and write the teacher ``report`` as JSON.

    ``report["splits"][name]["cache"]`` is how split ``name``'s probabilities were obtained (see
    :mod:`ptdistill.steps.teacher`); the report is what the report step reads back.
    """
    for name, artifact in outputs.items():
        artifact.metadata["cache"] = report["splits"][name]["cache"]
    Path(teacher_report.path).write_text(json.dumps(report))
