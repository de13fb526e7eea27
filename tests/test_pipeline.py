"""The pipeline as users meet it: compiled for the KFP UI (and loaded back), and run on this machine
through KFP's local subprocess runner (`duogen pipeline run --local --size small`, which `duogen run` runs
too) with its root and MLflow's artifacts on a real S3 server (SeaweedFS on 127.0.0.1), killed during
Stage 2 and started again, then once more. Every step's folder (toy world, shards, checkpoints, models, the
report, the answer page) lands in the bucket and nothing but MLflow's database and KFP's records stays on
the local disk. The MLflow store it leaves is read back: a run per step linked by the KFP run id, the
registered version with its metrics and lineage, the alias decision, and the answer page the promoted
model served over HTTP."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from duogen.components.pipeline.pipeline import duogen_pipeline
from duogen.platform.model_store import local_pair_dir

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import s3_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")
STAGE2_STEPS = 120  # long enough to be killed after its first checkpoint (every 50 steps)
ROOT = "runs/pipelines"  # in the bucket: the pipeline's root is s3://runs/pipelines
RUN = f"{ROOT}/toy"
slow = pytest.mark.slow  # the whole pipeline three times (killed, resumed, again): .ci/run


def test_the_compiled_pipeline_loads_back_with_every_parameter(tmp_path):
    from kfp.components import load_component_from_file

    out = subprocess.run(
        [DUOGEN, "pipeline", "compile", "-o", str(tmp_path / "p.yaml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    signature = inspect.signature(duogen_pipeline.pipeline_func)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(signature.parameters)
    assert params["stage1_steps"]["defaultValue"] == signature.parameters["stage1_steps"].default
    assert params["gates"]["defaultValue"] == {"t_com": 0.5, "i_com": 0.9}
    # every component keeps the parameters of its function
    import importlib

    # one file per component: comp-NAME is components/pipeline/NAME_component.py
    names = ["toyworld", "plan-curation", "curate", "dataset-manifest", "train", "evaluate"]
    names += ["register", "promote", "deploy"]
    functions = {}
    for name in names:
        module = importlib.import_module(f"duogen.components.pipeline.{name.replace('-', '_')}_component")
        functions[f"comp-{name}"] = getattr(module, name.replace("-", "_"))
    groups = {"comp-for-loop-1", "comp-condition-2", "comp-condition-3"}  # ParallelFor and If bodies
    assert set(functions) | {"comp-train-2"} == set(spec["components"]) - groups  # train-2: Stage 2's copy
    for name, component in [*functions.items(), ("comp-train-2", functions["comp-train"])]:
        declared = set(spec["components"][name]["inputDefinitions"]["parameters"])
        assert declared == set(inspect.signature(component.python_func).parameters), name
    tasks = spec["root"]["dag"]["tasks"]
    assert "iteratorPolicy" not in json.dumps(tasks)  # fan-out unbounded: every shard a pod
    assert tasks["for-loop-1"]["parameterIterator"]["items"]["inputParameter"].endswith(
        "plan-curation-Output"
    )
    assert tasks["train-2"]["inputs"]["parameters"]["model"]["taskOutputParameter"]["producerTask"] == "train"
    assert load_component_from_file(str(tmp_path / "p.yaml")).name == "duogen"
    # on a cluster every step's pod gets the S3 Secret as environment, and the steps that resume retry
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    assert all(
        e["secretAsEnv"][0]["keyToEnv"][0]
        == {"secretKey": "AWS_ACCESS_KEY_ID", "envVar": "AWS_ACCESS_KEY_ID"}
        for e in executors.values()
    )
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 2 and "retryPolicy" not in tasks["register"]


def _run(out: Path, env: dict, kill_when=None) -> subprocess.CompletedProcess | None:
    cmd = [DUOGEN, "run", "--size", "small", "--out", str(out), "--set", f"stage2_steps={STAGE2_STEPS}"]
    cmd += ["--set", f"root=s3://{ROOT}", "--artifacts", "s3://runs/mlflow"]
    if kill_when is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    with open(out.parent / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while not kill_when():
        assert proc.poll() is None, (out.parent / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "Stage 2 never wrote a checkpoint"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the machine goes away: no handler runs
    proc.wait()
    return None


def _records(fs) -> dict[str, tuple]:
    """Each finished step's record in the bucket: (last modified, etag)."""
    fs.invalidate_cache()
    return {
        p.split("/")[-2]: (fs.info(p)["LastModified"], fs.info(p)["ETag"])
        for p in fs.glob(f"{RUN}/*/_step.json")
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One local run on S3 killed during Stage 2, then the same command again (it finishes), then once more.
    The test process reads the bucket and MLflow's artifacts with the same credentials."""
    work = tmp_path_factory.mktemp("pipeline")
    out = work / "out"
    out.mkdir()
    with s3_server(work / "s3") as s3:
        s3.create_bucket("runs")
        fs = s3.filesystem()
        env = {**os.environ, **s3.env, "DUOGEN_SCRATCH": str(work / "scratch")}
        saved = {k: os.environ.get(k) for k in s3.env}
        os.environ.update(s3.env)
        try:

            def checkpointed() -> bool:
                fs.invalidate_cache()
                return fs.exists(f"{RUN}/stage2/checkpoints/latest")

            _run(out, env, kill_when=checkpointed)
            records = _records(fs)
            second = _run(out, env)
            assert second.returncode == 0, second.stderr[-4000:]
            third = _run(out, env)
            assert third.returncode == 0, third.stderr[-4000:]
            yield {
                "out": out,
                "fs": fs,
                "before": records,
                "line": json.loads(second.stdout.strip().splitlines()[-1]),
                "again": json.loads(third.stdout.strip().splitlines()[-1]),
            }
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _mlflow(out: Path):
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    return mlflow, mlflow.MlflowClient()


@slow
def test_finished_steps_are_not_redone_and_stage2_resumes_from_its_checkpoint(run):
    out, before = run["out"], run["before"]
    assert {"toyworld", "stage1"} <= set(before)
    assert "stage2" not in before  # killed during it
    after = _records(run["fs"])
    assert all(after[name] == record for name, record in before.items())  # not redone
    mlflow, client = _mlflow(out)
    experiment = mlflow.get_experiment_by_name("duogen-pipeline")
    stage2 = client.search_runs([experiment.experiment_id], "tags.stage = 'stage2'")
    assert sorted(r.data.tags["resumed"] for r in stage2) == ["False", "True"]
    resumed = next(r for r in stage2 if r.data.tags["resumed"] == "True")
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "loss")]
    # went on from a checkpoint (every 50 steps; steps count from 0) to the end
    assert steps and min(steps) in (50, 100) and max(steps) == STAGE2_STEPS - 1
    # the third run found everything done: the same answer, the same single version
    assert run["again"]["model_version"] == run["line"]["model_version"] == "duogen-toy/1"
    assert sum(run["again"]["step_seconds"].values()) == sum(run["line"]["step_seconds"].values())
    assert len(client.search_model_versions("name = 'duogen-toy'")) == 1


@slow
def test_every_artifact_of_the_run_is_in_object_storage(run):
    """Fails when a step keeps something on the local disk (a pod's disk goes with the pod)."""
    fs, line = run["fs"], run["line"]
    steps = {p.rsplit("/", 1)[-1] for p in fs.ls(RUN)}
    assert {"toyworld", "dataset", "stage1", "stage2", "evaluate", "register", "deploy-champion"} <= steps
    assert fs.exists(f"{RUN}/stage2/model/duogen_config.json")
    assert fs.exists(f"{RUN}/stage2/checkpoints/latest")  # checkpoints straight to S3
    for source in ("web", "video", "synthetic"):
        assert any(p.endswith(".tar") for p in fs.ls(f"{RUN}/curate-{source}-0of1")), source
    assert fs.exists(f"{RUN}/evaluate/report.html")
    assert line["answer_page"] == f"s3://{RUN}/deploy-champion/answer.html"
    manifest = json.loads(fs.cat_file(f"{RUN}/dataset/manifest.json"))
    assert all(u.startswith(f"s3://{RUN}/curate-") for us in manifest["sources"].values() for u in us)
    assert {p.name for p in run["out"].iterdir()} <= {"mlflow.db", "kfp"}  # nothing else stays local
    _, client = _mlflow(run["out"])
    files = client.get_model_version_download_uri("duogen-toy", "1")  # the pyfunc model's folder
    assert files.startswith("s3://runs/mlflow/") and fs.exists(files.removeprefix("s3://") + "/MLmodel")
    assert fs.glob(files.removeprefix("s3://") + "/artifacts/*/duogen_config.json")  # its `pair`


@slow
def test_the_store_holds_stage_runs_linked_by_the_kfp_run_id(run):
    mlflow, client = _mlflow(run["out"])
    experiment = mlflow.get_experiment_by_name("duogen-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {}
    for r in runs:
        by_name.setdefault(r.info.run_name, []).append(r)
    steps = {
        "toyworld",
        "curation",
        "stage1",
        "stage2",
        "evaluate",
        "register",
        "promote-champion",
        "deploy-champion",
    }
    assert set(by_name) == steps  # one run per step (the killed Stage 2 left a second one)
    assert [len(v) for k, v in sorted(by_name.items())] == [
        1 if k != "stage2" else 2 for k in sorted(by_name)
    ]
    assert all(r.data.tags["pipeline_run_id"] for v in by_name.values() for r in v)
    assert by_name["promote-champion"][0].data.tags["verdict"] == "promoted"
    assert by_name["curation"][0].data.metrics["synthetic.samples_kept"] > 0
    finished_stage2 = next(r for r in by_name["stage2"] if r.data.tags["resumed"] == "True")
    stage1, evaluate = by_name["stage1"][0], by_name["evaluate"][0]
    # the first run's steps carry its KFP run id, the rerun's steps the rerun's
    ids = {stage1.data.tags["pipeline_run_id"], finished_stage2.data.tags["pipeline_run_id"]}
    assert all(ids) and len(ids) == 2
    assert evaluate.data.tags["pipeline_run_id"] == finished_stage2.data.tags["pipeline_run_id"]
    assert set(evaluate.data.metrics) >= {"t_com", "i_com", "i_co", "i_q", "t_com_ci_low"}


@slow
def test_the_registered_version_carries_metrics_lineage_and_the_alias_decision(run):
    out, line = run["out"], run["line"]
    _, client = _mlflow(out)
    version = client.get_model_version("duogen-toy", "1")
    metrics = client.get_run(version.run_id).data.metrics  # the gates read the registering run's metrics
    assert metrics == pytest.approx(line["metrics"]) and "t_com" in metrics
    fs = run["fs"]
    manifest = json.loads(fs.cat_file(version.tags["lineage.dataset_manifest"].removeprefix("s3://")))
    assert set(manifest["sources"]) == {"web", "video", "synthetic"}  # no alignment data was given
    for source, folders in manifest["sources"].items():  # every source curated into shards
        shards = [fs.glob(f.removeprefix("s3://") + "/shard-*.tar") for f in folders]
        assert any(shards) and manifest["counters"][source], source
    runs = client.search_runs([_exp(client)])
    finished = [
        r.info.run_id for r in runs if r.info.run_name == "stage2" and r.data.tags["resumed"] == "True"
    ]
    assert version.tags["lineage.stage2_run"] == finished[0]  # the run that finished, not the killed one
    assert version.tags["lineage.stage1_run"] == next(
        r.info.run_id for r in runs if r.info.run_name == "stage1"
    )
    register = next(r for r in runs if r.info.run_name == "register")
    assert register.data.tags["pipeline_run_id"] == version.tags["lineage.kfp_run_id"] != ""
    # the small size has no gates: the version is promoted, and the decision is kept
    model = client.get_registered_model("duogen-toy")
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "1"} and line["promoted"] is True
    assert version.tags["promotion.champion"] == "promoted"
    history = json.loads(model.tags["alias.champion.history"])
    assert [h["version"] for h in history] == ["1"] and history[0]["previous"] is None
    local = local_pair_dir("models:/duogen-toy/1", run["out"].parent / "cache")  # through MLflow, from S3
    assert (local / "duogen_config.json").exists() and (local / "dit").is_dir()


@slow
def test_the_promoted_version_loads_by_alias_as_an_mlflow_model_and_answers(run):
    """What an MLflow user does with the main job's registry: `mlflow.pyfunc.load_model` by alias, then
    `predict` a toy-world request. Fails when the version is plain artifacts (no MLmodel), when the pyfunc
    loads another folder than the pair, or when predict drops the user's picture (the answer would differ)."""
    import base64
    import io

    import pandas as pd
    from PIL import Image

    mlflow, client = _mlflow(run["out"])
    model = mlflow.pyfunc.load_model("models:/duogen-toy@champion")
    assert model.metadata.get_input_schema().input_names() == ["prompt", "image"]
    from duogen.components.evaluation.toyworld_eval import held_out_tasks, task_request

    content = task_request(held_out_tasks(1, steps=2, seed=0)[0])[0]["content"]
    prompt = " ".join(p["text"] for p in content if p["type"] == "text")
    scene = next(p["image"] for p in content if p["type"] == "image")
    buf = io.BytesIO()
    scene.save(buf, format="PNG")
    ask = pd.DataFrame({"prompt": [prompt], "image": [base64.b64encode(buf.getvalue()).decode()]})
    out = model.predict(ask, params={"max_new_tokens": 96})
    assert list(out.columns) == ["text", "images"] and "Step 1" in out["text"][0]
    images = json.loads(out["images"][0])
    assert images and Image.open(io.BytesIO(base64.b64decode(images[0]))).size == scene.size


def _exp(client) -> str:
    return client.get_experiment_by_name("duogen-pipeline").experiment_id


@slow
def test_the_promoted_model_answered_over_http_and_the_answer_is_a_page(run):
    fs = run["fs"]
    record = json.loads(fs.cat_file(f"{RUN}/deploy-champion/_step.json"))["outputs"]
    assert record["page"] == run["line"]["answer_page"]
    html = fs.cat_file(record["page"].removeprefix("s3://")).decode()
    assert html.count("<img") == 1 + record["images"]  # the user's scene, then what the model drew
    assert "DuoGen answers over HTTP" in html
    for sentence in filter(None, record["text"].split("\n")):
        assert sentence.strip()[:40].replace("&", "&amp;") in html
    log = fs.cat_file(f"{RUN}/deploy-champion/answer.server.log").decode()
    assert re.search(r"POST /openai/v1/responses.*200", log)


@slow
def test_stage1_hands_stage2_the_shipped_pretrained_dit(run, tmp_path):
    """The toy pair starts its DiT from the package's pretrained one (as production's from Cosmos): Stage 1
    leaves the DiT as it was built, so Stage 2 aligns from exactly those weights."""
    from safetensors.torch import load_file

    from duogen.model.pretrained import pretrained_dit_dir

    exported = sorted(run["fs"].glob(f"{RUN}/stage1/**/dit/diffusion_pytorch_model.safetensors"))
    assert exported, "Stage 1 exported no pair"
    run["fs"].get(exported[0], str(tmp_path / "dit.safetensors"))
    shipped = load_file(str(pretrained_dit_dir("toy") / "diffusion_pytorch_model.safetensors"))
    stage1 = load_file(str(tmp_path / "dit.safetensors"))
    assert set(stage1) == set(shipped) and all(stage1[k].equal(shipped[k]) for k in shipped)


def test_the_pipelines_training_defaults_are_the_stages_recipes():
    """One recipe per stage: the UI's defaults come from components/training/recipes, as `duogen train`'s
    and the manifests' pods' do (a hard-coded default here would be a fourth copy)."""
    from duogen.components.training.config import load_config

    params = inspect.signature(duogen_pipeline.pipeline_func).parameters
    stage1, stage2 = load_config(stage="stage1"), load_config(stage="stage2")
    assert (params["stage1_steps"].default, params["stage1_lr"].default) == (stage1.steps, stage1.lr)
    assert (params["stage2_steps"].default, params["stage2_lr"].default) == (stage2.steps, stage2.lr)
    assert params["stage2_dit_lr_ratio"].default == stage2.dit_lr_ratio
    assert params["batch_size"].default == stage1.batch_size == stage2.batch_size


def test_a_run_is_named_by_its_run_name_or_else_by_its_kfp_run():
    """Two UI runs with the defaults (run_name empty) get their own folders, records and jobs."""
    from duogen.platform.steps import run_identity

    assert run_identity("toy", "6f1c") == "toy"
    assert run_identity("", "6f1c-22") == run_identity("  ", "6f1c-22") == "6f1c-22"
    assert run_identity("", "a") != run_identity("", "b")
    with pytest.raises(ValueError, match="needs a run_name or a KFP run id"):
        run_identity("", "{{$.pipeline_job_uuid}}")  # an unresolved placeholder names nothing
