"""Compiling every benchmark's pipeline to KFP IR YAML, read back strictly as protobuf messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.images import CPU_IMAGE, GPU_IMAGE
from pipelines.dag import compile_pipeline
from ptdistill import defaults
from ptdistill.cli import main
from ptdistill.config import load_config, to_dict
from ptdistill.experiments import BENCHMARKS, build_config, config_from_dict

TOP_TASKS = {"prepare-data", "train-teacher", "teacher-inference", "proxy-search", "report"}
LOOP_TASKS = {"distill-student", "evaluate"}
GPU_TASKS = {"train-teacher", "teacher-inference", "distill-student"}
ORDER = [("prepare-data", "train-teacher"), ("train-teacher", "teacher-inference"),
         ("teacher-inference", "proxy-search"), ("proxy-search", "LOOP"), ("LOOP", "report")]
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['pipelinechannel--(\w+)'\]\}\}")


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """A tiny numeric CSV for the tabular benchmark."""
    path = tmp_path_factory.mktemp("data") / "table.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"x1": rng.normal(size=40), "x2": rng.normal(size=40),
                  "label": ["yes", "no"] * 20}).to_csv(path, index=False)
    return path


def _config(benchmark: str, table: Path, overrides: list[str] = ()):
    cls = BENCHMARKS[benchmark][0]
    extra = [f"data.path={table}"] if benchmark == "tabular" else []
    return load_config(cls, None, [*extra, *overrides])


class Compiled:
    """A compiled pipeline, parsed with unknown fields rejected."""

    def __init__(self, path: Path) -> None:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and isinstance(docs[0], dict), f"{path}: no pipeline spec"
        self.spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
        self.platform = [json_format.ParseDict(d, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
                         for d in docs[1:] if d]
        self.deployment = json_format.ParseDict(docs[0]["deploymentSpec"],
                                                pipeline_spec_pb2.PipelineDeploymentConfig(),
                                                ignore_unknown_fields=False)

    @property
    def tasks(self):
        return self.spec.root.dag.tasks

    def loop(self) -> tuple[str, pipeline_spec_pb2.PipelineTaskSpec]:
        loops = [(name, t) for name, t in self.tasks.items() if t.WhichOneof("iterator") == "parameter_iterator"]
        assert len(loops) == 1, f"expected one ParallelFor, got {[n for n, _ in loops]}"
        return loops[0]

    def loop_tasks(self):
        _, task = self.loop()
        return self.spec.components[task.component_ref.name].dag.tasks

    def all_tasks(self) -> dict:
        return {**{n: t for n, t in self.tasks.items()}, **{n: t for n, t in self.loop_tasks().items()}}

    def container(self, task):
        label = self.spec.components[task.component_ref.name].executor_label
        return self.deployment.executors[label].container

    def root_default(self, name: str):
        return json_format.MessageToDict(self.spec.root.input_definitions.parameters[name].default_value)

    def resolve(self, raw: str):
        """A literal, or the default of the pipeline parameter a placeholder names."""
        match = PLACEHOLDER.fullmatch(raw)
        return self.root_default(match.group(1)) if match else raw

    def accelerator(self, task) -> tuple[str, int] | None:
        resources = self.container(task).resources
        if not resources.HasField("accelerator"):
            return None
        acc = resources.accelerator
        kind = self.resolve(acc.resource_type or acc.type)
        count = self.resolve(acc.resource_count or str(acc.count))
        return str(kind), int(float(count))


def _compile(config, tmp_path: Path, name: str = "x.yaml") -> Compiled:
    path = compile_pipeline(config, tmp_path / name)
    assert path == tmp_path / name and path.is_file()
    return Compiled(path)


@pytest.fixture(scope="module", params=sorted(BENCHMARKS))
def compiled(request, table, tmp_path_factory) -> tuple[object, Compiled]:
    config = _config(request.param, table)
    return config, _compile(config, tmp_path_factory.mktemp(f"compile-{request.param}"))


def test_pipeline_name_and_default_parameters(compiled):
    config, c = compiled
    assert c.spec.pipeline_info.name == f"ptdistill-{config.benchmark}"
    assert c.spec.sdk_version.startswith("kfp-2.")
    # The config travels as JSON and comes back as the same config; the fan-out grid is the default.
    assert config_from_dict(json.loads(c.root_default("config_json"))) == config
    assert c.root_default("runs") == config.runs()
    assert set(c.spec.root.input_definitions.parameters) >= {"config_json", "runs", "run_name", "tracking_uri",
                                                             "artifact_store"}
    # The one place for defaults (ptdistill.defaults) is what a run without these arguments uses.
    assert c.root_default("tracking_uri") == defaults.TRACKING_URI == "sqlite:///mlflow.db"
    assert c.root_default("artifact_store") == defaults.PIPELINE_ROOT == "runs"


def test_dag_tasks_and_fan_out(compiled):
    _, c = compiled
    loop_name, loop = c.loop()
    assert set(c.tasks) == TOP_TASKS | {loop_name}
    assert set(c.loop_tasks()) == LOOP_TASKS
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--runs"
    assert loop.inputs.parameters["pipelinechannel--runs"].component_input_parameter == "runs"
    assert "distill-student" in c.loop_tasks()["evaluate"].dependent_tasks
    for before, after in ORDER:
        before, after = (loop_name if t == "LOOP" else t for t in (before, after))
        assert before in c.tasks[after].dependent_tasks, (before, after)
    # report collects the students' rows from the loop (dsl.Collected).
    summaries = c.tasks["report"].inputs.parameters["summaries"].task_output_parameter
    assert summaries.producer_task == loop_name


def test_executors_use_the_project_images_without_installing_kfp(compiled):
    _, c = compiled
    tasks = c.all_tasks()
    assert set(tasks) - {c.loop()[0]} == TOP_TASKS | LOOP_TASKS
    for name, task in tasks.items():
        if name == c.loop()[0]:
            continue
        container = c.container(task)
        assert container.image == (GPU_IMAGE if name in GPU_TASKS else CPU_IMAGE), name
        text = " ".join([*container.command, *container.args])
        assert "kfp.dsl.executor_main" in text, name
        assert "pip install" not in text and "kfp==" not in text, name  # install_kfp_package=False


def test_no_accelerator_by_default(compiled):
    config, c = compiled
    assert config.accelerator.count == 0
    for name, task in c.all_tasks().items():
        if task.HasField("component_ref") and c.spec.components[task.component_ref.name].executor_label:
            assert c.accelerator(task) is None, name


def test_accelerator_request_with_set_override(tmp_path):
    out = tmp_path / "gpu.yaml"
    assert main(["compile", "synthetic", "--set", "accelerator.count=1", "-o", str(out)]) == 0
    c = Compiled(out)
    for name, task in c.all_tasks().items():
        if name == c.loop()[0]:
            continue
        expected = ("nvidia.com/gpu", 1) if name in GPU_TASKS else None
        assert c.accelerator(task) == expected, name


def test_gpu_steps_get_node_selector_and_tolerations_as_run_parameters(tmp_path):
    out = tmp_path / "gpu.yaml"
    assert main(["compile", "rotten-tomatoes", "--set", "accelerator.count=1",
                 "--set", "accelerator.node_selector={pool: gpu}",
                 "--set", "accelerator.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
                 "-o", str(out)]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["node_selector"]["defaultValue"] == {"pool": "gpu"}
    assert inputs["tolerations"]["defaultValue"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                      "effect": "NoSchedule"}]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-train-teacher", "exec-teacher-inference", "exec-distill-student"}
    for executor in executors.values():
        assert executor["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("node_selector")
        assert executor["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("tolerations")
    cpu = tmp_path / "cpu.yaml"
    assert main(["compile", "rotten-tomatoes", "-o", str(cpu)]) == 0
    assert len(list(yaml.safe_load_all(cpu.read_text()))) == 1  # no platform spec without GPUs


def test_accelerator_type_and_count_come_from_the_config(table, tmp_path):
    config = _config("tabular", table, ["accelerator.count=2", "accelerator.type=NVIDIA_TESLA_T4"])
    c = _compile(config, tmp_path)
    for name in GPU_TASKS:
        assert c.accelerator(c.all_tasks()[name]) == ("NVIDIA_TESLA_T4", 2), name


@pytest.mark.slow
def test_cli_compile_console_script(tmp_path):
    """``ptdistill compile synthetic -o FILE`` as a user runs it; image overrides are honoured."""
    script = Path(sys.executable).with_name("ptdistill")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ptdistill"]
    out = tmp_path / "out" / "synthetic.yaml"
    env = {**os.environ, "PTDISTILL_CPU_IMAGE": "registry.example/ptd-cpu:test",
           "PTDISTILL_GPU_IMAGE": "registry.example/ptd-gpu:test"}
    proc = subprocess.run([*cmd, "compile", "synthetic", "--quick", "-o", str(out)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    c = Compiled(out)
    quick = BENCHMARKS["synthetic"][0].quick()
    assert config_from_dict(json.loads(c.root_default("config_json"))) == quick
    assert {c.container(t).image for n, t in c.all_tasks().items() if n != c.loop()[0]} == {
        "registry.example/ptd-cpu:test", "registry.example/ptd-gpu:test"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no runs/ or mlflow.db from compiling


def test_cli_compile_tabular_checks_and_compiles(table, tmp_path, capsys):
    out = tmp_path / "tabular.yaml"
    assert main(["compile", "tabular", "--set", f"data.path={table}", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    config = config_from_dict(json.loads(Compiled(out).root_default("config_json")))
    assert config.data.path == str(table)
    assert to_dict(config) == to_dict(build_config("tabular", [f"data.path={table}"]))  # the default recipe, best
    assert config.recipe == "best" and config.student.train.select == "nll"


def test_cli_compile_reads_no_data(tmp_path, capsys):
    """compile checks the config only: a table that is not on this machine (only on the cluster) is
    passed on as given; prepare_data reads and checks it where the pipeline runs."""
    out = tmp_path / "tabular.yaml"
    missing = tmp_path / "on-the-cluster" / "table.csv"
    assert main(["compile", "tabular", "--set", f"data.path={missing}", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert config_from_dict(json.loads(Compiled(out).root_default("config_json"))).data.path == str(missing)
    assert main(["compile", "tabular", "--set", f"data.path={missing.with_suffix('.xlsx')}", "-o", str(out)]) == 2
    assert "unsupported file type '.xlsx'; expected one of .csv, .parquet, .pq" in capsys.readouterr().err


# --------------------------------------------------------------------------- sharded teacher inference


def test_sharded_teacher_inference_is_a_parallel_for_and_a_merge(tmp_path):
    out = tmp_path / "sharded.yaml"
    assert main(["compile", "synthetic", "--set", "inference_shards=3", "--set", "accelerator.count=1",
                 "-o", str(out)]) == 0
    c = Compiled(out)
    loops = {n: t for n, t in c.tasks.items() if t.WhichOneof("iterator") == "parameter_iterator"}
    (shard_loop,) = [n for n, t in loops.items() if t.parameter_iterator.items.raw]
    (student_loop,) = set(loops) - {shard_loop}
    iterator = loops[shard_loop].parameter_iterator
    assert json.loads(iterator.items.raw) == [0, 1, 2]  # built at compile time from inference_shards
    body = c.spec.components[loops[shard_loop].component_ref.name].dag.tasks
    assert set(body) == {"teacher-inference-shard"}
    shard = body["teacher-inference-shard"]
    assert shard.inputs.parameters["shard"].component_input_parameter == iterator.item_input
    assert shard.inputs.parameters["num_shards"].runtime_value.constant.number_value == 3
    assert c.container(shard).image == GPU_IMAGE and c.accelerator(shard) == ("nvidia.com/gpu", 1)
    assert set(c.tasks) == TOP_TASKS - {"teacher-inference"} | {"merge-teacher-shards", shard_loop, student_loop}
    merge = c.tasks["merge-teacher-shards"]
    assert c.container(merge).image == CPU_IMAGE and c.accelerator(merge) is None
    assert shard_loop in merge.dependent_tasks and "train-teacher" in loops[shard_loop].dependent_tasks
    parts = merge.inputs.artifacts["parts"].task_output_artifact  # dsl.Collected over the shard loop
    assert parts.producer_task == shard_loop
    assert c.spec.components[merge.component_ref.name].input_definitions.artifacts["parts"].is_artifact_list
    # The merge's outputs replace teacher_inference's everywhere downstream.
    for task, name in (("proxy-search", "validation_probs"), ("report", "teacher_report")):
        source = c.tasks[task].inputs.artifacts[name].task_output_artifact
        assert (source.producer_task, source.output_artifact_key) == ("merge-teacher-shards", name), task
    students = c.tasks[student_loop].inputs.artifacts["pipelinechannel--merge-teacher-shards-distill_probs"]
    assert students.task_output_artifact.producer_task == "merge-teacher-shards"
    assert "merge-teacher-shards" in c.tasks["proxy-search"].dependent_tasks


def test_one_shard_compiles_the_single_teacher_inference_task(tmp_path):
    assert main(["compile", "synthetic", "-o", str(tmp_path / "default.yaml")]) == 0
    assert main(["compile", "synthetic", "--set", "inference_shards=1", "-o", str(tmp_path / "one.yaml")]) == 0
    default, one = Compiled(tmp_path / "default.yaml"), Compiled(tmp_path / "one.yaml")
    assert one.spec == default.spec and one.platform == default.platform
    one.loop()  # exactly one ParallelFor: the students'
    assert "teacher-inference" in one.tasks and "merge-teacher-shards" not in one.tasks
    assert not any("shard" in name for name in one.spec.components)
