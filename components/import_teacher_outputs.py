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
    import json
    import logging
    from pathlib import Path

    from ptdistill.experiments import config_from_dict
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.teacher import import_teacher_outputs as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    splits = {"teacher_train": teacher_train, "distill": distill, "validation": validation, "test": test}
    outputs = {"distill": distill_probs, "validation": validation_probs, "test": test_probs}
    report = step(config_from_dict(json.loads(config)), RunInfo.load(run_info.path),
                  {k: Path(a.path) for k, a in splits.items()}, {k: Path(a.path) for k, a in outputs.items()})
    for name, artifact in outputs.items():
        artifact.metadata["cache"] = report["splits"][name]["cache"]
        artifact.metadata["source"] = report["source"]["uri"]
    Path(teacher_report.path).write_text(json.dumps(report))
