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
    import logging
    from pathlib import Path

    from ptdistill.experiments import config_from_dict
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.report import report as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = [json.loads(s) if isinstance(s, str) else s for s in summaries]
    teacher_json = json.loads(Path(teacher_report.path).read_text())
    teacher = {**teacher_json["splits"]["test"].get("metrics", {}), "source": teacher_json.get("source")}
    search_result = json.loads((Path(search.path) / "result.json").read_text())
    step(config_from_dict(json.loads(config)), RunInfo.load(run_info.path), rows, search_result, teacher,
         Path(markdown.path), Path(page.path), Path(markdown.path).parent / "report")
