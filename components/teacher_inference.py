"""teacher_inference: teacher probabilities on the distillation, validation and test splits, cached."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def teacher_inference(
    config: str,
    run_info: Input[Artifact],
    teacher: Input[Model],
    distill: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    distill_probs: Output[Dataset],
    validation_probs: Output[Dataset],
    test_probs: Output[Dataset],
    teacher_report: Output[Artifact],
):
    """Run (or fetch from the cache) the teacher's outputs on each split."""
    from pathlib import Path

    from components._common import paths, record_teacher_outputs, step_inputs
    from ptdistill.steps.teacher import teacher_inference as step

    splits = {"distill": distill, "validation": validation, "test": test}
    outputs = {"distill": distill_probs, "validation": validation_probs, "test": test_probs}
    report = step(*step_inputs(config, run_info), Path(teacher.path), paths(splits), paths(outputs))
    record_teacher_outputs(report, outputs, teacher_report)
