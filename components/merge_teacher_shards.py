"""merge_teacher_shards: the shards' teacher outputs as one output per split, checked, cached and reported."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_teacher_shards(
    config: str,
    run_info: Input[Artifact],
    parts: Input[List[Dataset]],
    distill: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    distill_probs: Output[Dataset],
    validation_probs: Output[Dataset],
    test_probs: Output[Dataset],
    teacher_report: Output[Artifact],
):
    """Merge the parts of teacher_inference_shard (``dsl.Collected``): the outputs of teacher_inference."""
    from pathlib import Path

    from components._common import paths, record_teacher_outputs, step_inputs
    from ptdistill.steps.teacher import merge_teacher_shards as step

    splits = {"distill": distill, "validation": validation, "test": test}
    outputs = {"distill": distill_probs, "validation": validation_probs, "test": test_probs}
    report = step(*step_inputs(config, run_info), [Path(p.path) for p in parts], paths(splits), paths(outputs))
    record_teacher_outputs(report, outputs, teacher_report)
