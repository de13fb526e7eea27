"""The whole pipeline with object storage for every artifact: `duogen run --size small` with its root and
MLflow's artifacts on a real S3 server (SeaweedFS on 127.0.0.1). Every step's folder (toy world, shards,
checkpoints, models, the report, the answer page) lands in the bucket, the registered version's files are
in the bucket, and the promoted alias is served from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import s3_server  # noqa: E402

pytestmark = pytest.mark.slow  # the whole pipeline on S3: .ci/run

DUOGEN = str(Path(sys.executable).parent / "duogen")


def test_every_artifact_of_a_run_is_in_object_storage(tmp_path):
    with s3_server(tmp_path / "s3") as s3:
        s3.create_bucket("runs")
        out = tmp_path / "local"
        env = {**os.environ, **s3.env, "DUOGEN_SCRATCH": str(tmp_path / "scratch")}
        cmd = [DUOGEN, "run", "--size", "small", "--out", str(out), "--set", "root=s3://runs/pipelines"]
        cmd += ["--artifacts", "s3://runs/mlflow"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == 0, done.stderr[-4000:]
        line = json.loads(done.stdout.strip().splitlines()[-1])
        fs = s3.filesystem()
        steps = {p.rsplit("/", 1)[-1] for p in fs.ls("runs/pipelines/toy")}
        assert {"toyworld", "dataset", "stage1", "stage2", "evaluate", "register", "deploy-champion"} <= steps
        assert fs.exists("runs/pipelines/toy/stage2/model/duogen_config.json")
        assert fs.exists("runs/pipelines/toy/stage2/checkpoints/latest")  # checkpoints straight to S3
        for source in ("web", "video", "synthetic"):
            assert any(p.endswith(".tar") for p in fs.ls(f"runs/pipelines/toy/curate-{source}-0of1")), source
        assert fs.exists("runs/pipelines/toy/evaluate/report.html")
        assert line["answer_page"] == "s3://runs/pipelines/toy/deploy-champion/answer.html"
        page = fs.cat_file("runs/pipelines/toy/deploy-champion/answer.html").decode()
        assert page.count("<img") >= 1 and "DuoGen answers over HTTP" in page
        manifest = json.loads(fs.cat_file("runs/pipelines/toy/dataset/manifest.json"))
        assert all(
            u.startswith("s3://runs/pipelines/toy/curate-") for us in manifest["sources"].values() for u in us
        )
        # nothing but MLflow's database and KFP's own local records stays on the local disk
        assert {p.name for p in out.iterdir()} <= {"mlflow.db", "kfp"}
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        files = client.get_model_version_download_uri("duogen-toy", "1")  # the pyfunc model's folder
        assert files.startswith("s3://runs/mlflow/") and fs.exists(files.removeprefix("s3://") + "/MLmodel")
        assert fs.glob(files.removeprefix("s3://") + "/artifacts/*/duogen_config.json")  # its `pair`
