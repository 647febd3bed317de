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
    from pathlib import Path

    from components._common import paths, step_inputs
    from ptdistill.steps.teacher import teacher_inference_shard as step

    splits = {"distill": distill, "validation": validation, "test": test}
    summary = step(*step_inputs(config, run_info), Path(teacher.path), paths(splits), int(shard), int(num_shards),
                   Path(part.path))
    part.metadata.update({"shard": summary["shard"], "num_shards": summary["num_shards"],
                          **{f"{name}_cache": entry["cache"] for name, entry in summary["splits"].items()}})
    if "examples_per_second" in summary:
        part.metadata["examples_per_second"] = summary["examples_per_second"]
