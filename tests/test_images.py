"""The container images (images/*.Dockerfile). No Docker engine runs here, so they cannot be built: these
tests read them and check them against what runs in them — the chart's and the manifests' commands, ports,
user and writable paths, the pipeline's image names — and run the helper the GPU image installs with."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def one(items, word: str) -> str:
    (value,) = [v for w, v in items if w == word]
    return value


def _serve_args(cmd: str):
    from duogen.components.serving.arguments import add_arguments

    argv = yaml.safe_load(cmd)
    assert argv[:2] == ["duogen", "serve"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return parser.parse_args(argv[2:])


@pytest.fixture(scope="module")
def chart_values() -> dict:
    return yaml.safe_load((ROOT / "helm" / "duogen" / "values.yaml").read_text())


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_images_run_as_the_user_and_paths_the_chart_expects(name, chart_values):
    steps = instructions(IMAGES / f"{name}.Dockerfile")
    user = one(steps, "USER")
    assert user == str(chart_values["runAsUser"])  # numeric: runAsNonRoot can verify it
    run = one(steps, "RUN")
    assert f"--uid {user}" in run
    assert "HOME=/tmp" in one(steps, "ENV")  # the chart and manifests mount /tmp under a read-only root
    assert "8080" in one(steps, "EXPOSE").split()
    served = _serve_args(one(steps, "CMD"))
    assert (served.host, served.port) == ("0.0.0.0", 8080)
    words = [w for w, _ in steps]
    assert words.index("USER") > words.index("RUN")  # installs as root, runs as not
    defaults = dict(v.split("=", 1) for w, v in steps if w == "ARG" and "=" in v)
    for word, value in steps:
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], value.split()[0])
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image


def test_the_cpu_image_installs_with_the_constraints_everything_the_chart_runs_in_it(chart_values):
    steps = instructions(IMAGES / "cpu.Dockerfile")
    assert one(steps, "FROM").startswith("python:3.11")
    run = one(steps, "RUN")
    installs = [c.strip() for c in run.split("&&") if c.strip().startswith("pip install")]
    assert installs and all("-c constraints.txt" in c for c in installs)
    assert "download.pytorch.org/whl/cpu" in installs[0] and installs[0].endswith("torch")
    assert "EXTRAS=server" in one(steps, "ARG")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "duogen" in project["scripts"]  # the upload Job's command
    assert any(r.startswith("mlflow") for r in project["dependencies"])  # MLflow's Deployment
    assert any(r.startswith("psycopg2") for r in project["optional-dependencies"]["server"])  # its Postgres
    assert "5000" in one(steps, "EXPOSE").split()
    from duogen.components.pipeline import IMAGE

    assert IMAGE == chart_values["image"]["cpu"]  # the pipeline's steps run the image the chart installs


def test_the_gpu_image_keeps_the_ngc_stack_and_pins_the_rest():
    steps = instructions(IMAGES / "gpu.Dockerfile")
    assert one(steps, "ARG").startswith("BASE=nvcr.io/nvidia/pytorch:") and one(steps, "FROM") == "${BASE}"
    run = one(steps, "RUN")
    assert "pip install -c /tmp/constraints.txt -r /tmp/requirements.txt" in run
    assert "pip install --no-deps ." in run
    assert not re.search(r"pip install[^&]*\b(torch|transformer.engine|apex)\b", run)
    served = _serve_args(one(steps, "CMD"))
    assert (served.device, served.dtype) == ("cuda", "bfloat16")
    from duogen.platform.pytorchjob import ClusterSettings

    values = yaml.safe_load((ROOT / "helm" / "duogen" / "values.yaml").read_text())
    assert (
        ClusterSettings().image == values["image"]["gpu"]
    )  # the PyTorchJobs' image is the chart's GPU image


def _base_requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, IMAGES / "base_requirements.py", *args], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def test_base_requirements_leaves_out_only_what_the_base_image_provides():
    provided = ["--provided", "torch", "nvidia-", "transformer-engine", "apex"]
    reqs = _base_requirements("requirements", *provided, "--extra", "server")
    names = {re.split(r"[<>=!\[ ;]", r)[0].lower() for r in reqs}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    everything = {re.split(r"[<>=!\[ ;]", r)[0].lower() for r in project["dependencies"]}
    assert everything - names == {"torch", "nvidia-dali-cuda120"}
    assert "psycopg2-binary" in names
    pins = [p.split("#")[0].strip() for p in _base_requirements("constraints", *provided)]
    assert "megatron-core==0.16.1" in pins and any(p.startswith("numpy==") for p in pins)
    dropped = {ln.split("#")[0].strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()} - set(
        pins
    )
    assert {d for d in dropped if d} == {"torch==2.13.0", "nvidia-dali-cuda120==2.4.0"}


def test_the_build_context_holds_what_the_dockerfiles_copy():
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for name in ("cpu", "gpu"):
        for word, value in instructions(IMAGES / f"{name}.Dockerfile"):
            if word == "COPY":
                *sources, _ = value.split()
                for src in sources:
                    assert src.rstrip("/") in allowed, (
                        f"{name}.Dockerfile copies {src}, which .dockerignore drops"
                    )
                    assert (ROOT / src).exists()


def test_the_gpu_image_checks_its_stack_imports_together_with_what_a_cpu_allows():
    """images/check_gpu_stack.py, run by the GPU Dockerfile: here (CPU) torch, DALI, megatron-core and DuoGen
    import together; the full check names what a CPU machine lacks (TE, Apex, a CUDA torch) and fails."""
    import json
    import subprocess
    import sys

    script = ROOT / "images" / "check_gpu_stack.py"
    assert "python images/check_gpu_stack.py" in (ROOT / "images" / "gpu.Dockerfile").read_text()
    cpu = subprocess.run([sys.executable, str(script), "--cpu"], capture_output=True, text=True, timeout=300)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    found = json.loads(cpu.stdout.strip().splitlines()[-1])
    assert {"torch", "nvidia-dali", "megatron-core", "duogen"} <= set(found["versions"])
    full = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    problems = " ".join(json.loads(full.stdout.strip().splitlines()[-1])["problems"])
    assert full.returncode == 1
    assert "transformer_engine" in problems and "apex" in problems and "CPU build" in problems
