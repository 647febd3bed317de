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
    import json
    import logging
    from pathlib import Path

    from ptdistill.experiments import config_from_dict
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.teacher import merge_teacher_shards as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    splits = {"distill": distill, "validation": validation, "test": test}
    outputs = {"distill": distill_probs, "validation": validation_probs, "test": test_probs}
    report = step(config_from_dict(json.loads(config)), RunInfo.load(run_info.path), [Path(p.path) for p in parts],
                  {k: Path(a.path) for k, a in splits.items()}, {k: Path(a.path) for k, a in outputs.items()})
    for name, artifact in outputs.items():
        artifact.metadata["cache"] = report["splits"][name]["cache"]
    Path(teacher_report.path).write_text(json.dumps(report))
