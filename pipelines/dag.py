"""The DAG: prepare_data -> train_teacher -> teacher_inference -> proxy_search ->
ParallelFor(method x seed){distill_student -> evaluate} -> report (dsl.Collected).

With ``inference_shards = k > 1`` (a compile-time choice) teacher_inference becomes
ParallelFor(shard in [0, k)){teacher_inference_shard} -> merge_teacher_shards (the shards'
parts through ``dsl.Collected``), and the merge's outputs feed everything downstream.

With ``teacher.outputs`` set (teacher outputs scored elsewhere, also a compile-time choice) there
is no train_teacher and no teacher inference at all: import_teacher_outputs reads the file and
writes the same three probability tables and teacher report, which feed everything downstream.

Inside a fan-out only pipeline parameters, constants, the loop item and artifacts are used:
kfp.local 2.17 replaces any upstream *parameter* output passed into a ParallelFor body with the
loop item, so facts such as the parent run id travel in the ``run_info`` artifact.
"""

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import json
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components.distill_student import distill_student
from components.evaluate import evaluate
from components.import_teacher_outputs import import_teacher_outputs
from components.merge_teacher_shards import merge_teacher_shards
from components.prepare_data import prepare_data
from components.proxy_search import proxy_search
from components.report import report
from components.teacher_inference import teacher_inference
from components.teacher_inference_shard import teacher_inference_shard
from components.train_teacher import train_teacher
from ptdistill import defaults
from ptdistill.config import to_dict
from ptdistill.experiments import ExperimentConfig


def _on_accelerator(task: dsl.PipelineTask, config: ExperimentConfig, kind, count, node_selector,
                    tolerations) -> dsl.PipelineTask:
    """Put a task on the GPU pool when the benchmark is compiled with ``accelerator.count > 0``.

    Type, count, node selector and tolerations are then the run's ``accelerator_*``,
    ``node_selector`` and ``tolerations`` parameters, so a run can change them without
    recompiling; kfp.local ignores them with a warning.
    """
    if config.accelerator.count > 0:
        task.set_accelerator_type(kind).set_accelerator_limit(count)
        kubernetes.add_node_selector_json(task, node_selector)
        kubernetes.add_toleration_json(task, tolerations)
    return task


def _teacher_inference(config: ExperimentConfig, config_json, info, data: dsl.PipelineTask, splits: dict,
                       gpu: tuple) -> dsl.PipelineTask:
    """train_teacher, then teacher_inference (or its shards and their merge): the task whose outputs
    are the teacher's probabilities and report."""
    teacher = _on_accelerator(train_teacher(config=config_json, run_info=info, teacher_train=data.outputs["teacher_train"],
                                            validation=data.outputs["validation"]), *gpu)
    if config.inference_shards > 1:
        with dsl.ParallelFor(list(range(config.inference_shards))) as shard:
            part = _on_accelerator(teacher_inference_shard(
                config=config_json, run_info=info, teacher=teacher.outputs["teacher"], shard=shard,
                num_shards=config.inference_shards, **splits), *gpu)
        return merge_teacher_shards(config=config_json, run_info=info, parts=dsl.Collected(part.outputs["part"]),
                                    **splits)
    return _on_accelerator(teacher_inference(config=config_json, run_info=info, teacher=teacher.outputs["teacher"],
                                             **splits), *gpu)


def build_pipeline(config: ExperimentConfig):
    """The pipeline function of ``config.benchmark``, with the config as its default parameters."""

    @dsl.pipeline(
        name=f"ptdistill-{config.benchmark}",
        description=f"PTLoss distillation with proxy-teacher search: {config.benchmark} benchmark",
    )
    def pipeline(
        config_json: str = json.dumps(to_dict(config)),
        runs: list = config.runs(),
        run_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        tracking_uri: str = defaults.TRACKING_URI,
        artifact_store: str = defaults.PIPELINE_ROOT,
        accelerator_type: str = config.accelerator.type,
        accelerator_count: int = config.accelerator.count,
        node_selector: dict = config.accelerator.node_selector,
        tolerations: list = config.accelerator.tolerations,
    ):
        gpu = (config, accelerator_type, accelerator_count, node_selector, tolerations)
        data = prepare_data(config=config_json, run_name=run_name, tracking_uri=tracking_uri,
                            artifact_store=artifact_store)
        info = data.outputs["run_info"]
        splits = {name: data.outputs[name] for name in ("distill", "validation", "test")}
        if config.teacher.outputs:
            inference = import_teacher_outputs(config=config_json, run_info=info,
                                               teacher_train=data.outputs["teacher_train"], **splits)
            # KFP's cache keys on the URI, not the file: a file replaced in place must be read again
            # (the step's own cache is keyed on the file's sha256)
            inference.set_caching_options(False)
        else:
            inference = _teacher_inference(config, config_json, info, data, splits, gpu)
        searched = proxy_search(config=config_json, run_info=info, validation=data.outputs["validation"],
                                validation_probs=inference.outputs["validation_probs"])
        with dsl.ParallelFor(runs) as student_item:
            student = _on_accelerator(distill_student(
                config=config_json, student_item=student_item, run_info=info, distill=data.outputs["distill"],
                distill_probs=inference.outputs["distill_probs"], validation=data.outputs["validation"],
                search=searched.outputs["search"], teacher_train=data.outputs["teacher_train"]), *gpu)
            scored = evaluate(config=config_json, run_info=info, student=student.outputs["student"],
                              validation=data.outputs["validation"], test=data.outputs["test"])
        report(config=config_json, summaries=dsl.Collected(scored.outputs["Output"]), run_info=info,
               search=searched.outputs["search"], teacher_report=inference.outputs["teacher_report"])

    return pipeline


def compile_pipeline(config: ExperimentConfig, path: "str | Path") -> Path:
    """Compile the benchmark's pipeline to KFP IR YAML (for Kubeflow Pipelines or Vertex AI)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(config), str(path))
    return path
