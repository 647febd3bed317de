"""distill_student: train one student on the teacher's outputs with one method and seed."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def distill_student(
    config: str,
    student_item: dict,
    run_info: Input[Artifact],
    distill: Input[Dataset],
    distill_probs: Input[Dataset],
    validation: Input[Dataset],
    search: Input[Artifact],
    teacher_train: Input[Dataset],
    student: Output[Model],
):
    """Distill a student; ``student_item`` is one {method, seed} item of the fan-out."""
    from pathlib import Path

    from components._common import step_inputs
    from ptdistill.steps.student import distill_student as step

    cfg, info = step_inputs(config, run_info)
    record = step(cfg, info, str(student_item["method"]), int(student_item["seed"]),
                  Path(distill.path), Path(distill_probs.path), Path(validation.path), Path(search.path),
                  Path(student.path), Path(teacher_train.path))
    student.metadata.update({"method": record["method"], "seed": record["seed"]})
