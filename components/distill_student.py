"""distill_student: train one student on the teacher's outputs with one method and seed."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def distill_student(
    config: str,
    run: dict,
    run_info: Input[Artifact],
    distill: Input[Dataset],
    distill_probs: Input[Dataset],
    validation: Input[Dataset],
    search: Input[Artifact],
    teacher_train: Input[Dataset],
    student: Output[Model],
):
    """Distill a student; ``run`` is one {method, seed} item of the fan-out."""
    import json
    import logging
    from pathlib import Path

    from ptdistill.experiments import config_from_dict
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.student import distill_student as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    record = step(config_from_dict(json.loads(config)), RunInfo.load(run_info.path), str(run["method"]), int(run["seed"]),
                  Path(distill.path), Path(distill_probs.path), Path(validation.path), Path(search.path),
                  Path(student.path), Path(teacher_train.path))
    student.metadata.update({"method": record["method"], "seed": record["seed"]})
