"""import_teacher_outputs: teacher outputs scored elsewhere (``teacher.outputs``) in place of train_teacher and
teacher_inference, checked and aligned to the splits, cached."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def import_teacher_outputs(
    config: str,
    run_info: Input[Artifact],
    teacher_train: Input[Dataset],
    distill: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    distill_probs: Output[Dataset],
    validation_probs: Output[Dataset],
    test_probs: Output[Dataset],
    teacher_report: Output[Artifact],
):
    """The outputs of teacher_inference, read from the file ``teacher.outputs`` names."""
    from components._common import paths, record_teacher_outputs, step_inputs
    from ptdistill.steps.teacher import import_teacher_outputs as step

    splits = {"teacher_train": teacher_train, "distill": distill, "validation": validation, "test": test}
    outputs = {"distill": distill_probs, "validation": validation_probs, "test": test_probs}
    report = step(*step_inputs(config, run_info), paths(splits), paths(outputs))
    for artifact in outputs.values():
        artifact.metadata["source"] = report["source"]["uri"]
    record_teacher_outputs(report, outputs, teacher_report)
