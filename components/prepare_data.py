"""prepare_data: the four splits (teacher-train, distillation, validation, test) and the MLflow parent run."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_data(
    config: str,
    run_name: str,
    tracking_uri: str,
    artifact_store: str,
    teacher_train: Output[Dataset],
    distill: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    run_info: Output[Artifact],
):
    """Build the splits of the benchmark's data and open the parent run."""
    from pathlib import Path

    from components._common import paths, step_config
    from ptdistill.steps.data import prepare_data as step

    outputs = {"teacher_train": teacher_train, "distill": distill, "validation": validation, "test": test}
    info = step(step_config(config), run_name, tracking_uri, artifact_store, paths(outputs), Path(run_info.path))
    for artifact in outputs.values():
        artifact.metadata["fingerprint"] = info.fingerprint
