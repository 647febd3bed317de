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
    import json
    import logging
    from pathlib import Path

    from ptdistill.experiments import config_from_dict
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.teacher import teacher_inference as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    splits = {"distill": distill, "validation": validation, "test": test}
    outputs = {"distill": distill_probs, "validation": validation_probs, "test": test_probs}
    report = step(config_from_dict(json.loads(config)), RunInfo.load(run_info.path), Path(teacher.path),
                  {k: Path(a.path) for k, a in splits.items()}, {k: Path(a.path) for k, a in outputs.items()})
    for name, artifact in outputs.items():
        artifact.metadata["cache"] = report["splits"][name]["cache"]
    Path(teacher_report.path).write_text(json.dumps(report))
