"""train_teacher: fit the teacher on the labeled teacher-train split (GPU when requested)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_teacher(
    config: str,
    run_info: Input[Artifact],
    teacher_train: Input[Dataset],
    validation: Input[Dataset],
    teacher: Output[Model],
) -> NamedTuple("TeacherOutputs", [("teacher_id", str)]):
    """Train the teacher and save it as a model directory."""
    from collections import namedtuple
    from pathlib import Path

    from components._common import step_inputs
    from ptdistill.steps.teacher import train_teacher as step

    summary = step(*step_inputs(config, run_info), Path(teacher_train.path), Path(validation.path),
                   Path(teacher.path))
    teacher.metadata.update(summary)
    return namedtuple("TeacherOutputs", ["teacher_id"])(summary["teacher_id"])
