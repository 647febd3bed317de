"""teacher_inference_shard: the teacher on one shard of each split not yet cached (fanned out by ParallelFor)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def teacher_inference_shard(
    config: str,
    run_info: Input[Artifact],
    teacher: Input[Model],
    distill: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    shard: int,
    num_shards: int,
    part: Output[Dataset],
):
    """Write shard ``shard`` of ``num_shards``'s teacher outputs to ``part``, for merge_teacher_shards."""
    import json
    import logging
    from pathlib import Path

    from ptdistill.experiments import config_from_dict
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.teacher import teacher_inference_shard as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    splits = {"distill": distill, "validation": validation, "test": test}
    summary = step(config_from_dict(json.loads(config)), RunInfo.load(run_info.path), Path(teacher.path),
                   {k: Path(a.path) for k, a in splits.items()}, int(shard), int(num_shards), Path(part.path))
    part.metadata.update({"shard": summary["shard"], "num_shards": summary["num_shards"],
                          **{f"{name}_cache": entry["cache"] for name, entry in summary["splits"].items()}})
    if "examples_per_second" in summary:
        part.metadata["examples_per_second"] = summary["examples_per_second"]
