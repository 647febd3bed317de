"""evaluate: test metrics of one student, its MLflow child run, and KFP metrics outputs."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    config: str,
    run_info: Input[Artifact],
    student: Input[Model],
    validation: Input[Dataset],
    test: Input[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Evaluate the student; returns its summary row as JSON for the report."""
    import json
    from pathlib import Path

    from components._common import step_inputs
    from ptdistill.steps.evaluate import evaluate_student

    cfg, info = step_inputs(config, run_info)
    row = evaluate_student(cfg, info, Path(student.path), Path(validation.path), Path(test.path),
                           Path(metrics.path).parent / "evaluation")
    for key, value in row.items():
        if key.startswith(("test_", "val_")):
            metrics.log_metric(key, value)
    confusion.log_confusion_matrix(info.class_names, row.pop("confusion_matrix"))
    return json.dumps(row)
