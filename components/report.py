"""report: results over methods and seeds as Markdown and HTML, champion registration, parent run closed."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def report(
    config: str,
    summaries: list,
    run_info: Input[Artifact],
    search: Input[Artifact],
    teacher_report: Input[Artifact],
    markdown: Output[Markdown],
    page: Output[HTML],
):
    """Collect the students' rows (``dsl.Collected``) into the run's report."""
    import json
    from pathlib import Path

    from components._common import step_inputs
    from ptdistill.steps.report import report as step

    rows = [json.loads(s) if isinstance(s, str) else s for s in summaries]
    teacher_json = json.loads(Path(teacher_report.path).read_text())
    teacher = {**teacher_json["splits"]["test"].get("metrics", {}), "source": teacher_json.get("source"),
               "training": teacher_json.get("training")}
    search_result = json.loads((Path(search.path) / "result.json").read_text())
    step(*step_inputs(config, run_info), rows, search_result, teacher,
         Path(markdown.path), Path(page.path), Path(markdown.path).parent / "report")
