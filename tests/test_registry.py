"""The MLflow registry as users drive it (`duogen registry promote|resolve`, against a sqlite store): a
version carries its metrics (its run's); the alias moves only when every gate passes; every decision is
kept. tests/test_registry_server.py runs the same against a real `mlflow server` on S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from duogen.model.errors import DuoGenInputError
from duogen.platform.model_store import pair_folder
from duogen.platform.registry import check_gates, promote, register_pair, resolve

DUOGEN = str(Path(sys.executable).parent / "duogen")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    pair = tmp_path / "pair"
    (pair / "dit").mkdir(parents=True)
    (pair / "duogen_config.json").write_text("{}")
    (pair / "dit" / "weights.safetensors").write_bytes(b"w")
    return uri, pair, (tmp_path / "artifacts").as_uri()


def _register(store, metrics, run="root#a"):
    uri, pair, artifacts = store
    lineage = {"dataset_manifest": "s3://b/manifest.json", "kfp_run_id": "42"}
    return register_pair(pair, "toy", metrics, lineage, run, uri, "exp", artifacts)


def test_a_pipeline_run_registers_its_pair_once(store):
    first = _register(store, {"t_com": 0.9})
    again = _register(store, {"t_com": 0.9})
    other = _register(store, {"t_com": 0.2}, run="root#b")
    assert (first.version, first.created) == ("1", True)
    assert (again.version, again.created) == ("1", False)
    assert other.version == "2"
    files = pair_folder(Path(first.source.removeprefix("file://")))  # the pyfunc model's artifact `pair`
    assert (files / "dit" / "weights.safetensors").read_bytes() == b"w"
    assert (files.parents[1] / "MLmodel").exists() and files.parent.name == "artifacts"


def test_gates_read_metrics_and_name_every_failure():
    assert check_gates({"t_com": 0.9, "i_com": 1.0}, {"t_com": 0.9, "i_com": 0.95}) == []
    assert check_gates({"t_com": 0.4}, {"t_com": 0.9, "i_com": 0.95}) == [
        "i_com missing (gate 0.95)",
        "t_com 0.4 < 0.9",
    ]


def test_the_alias_moves_only_when_the_gates_pass_and_history_is_kept(store):
    uri = store[0]
    good, bad = _register(store, {"t_com": 0.95}), _register(store, {"t_com": 0.3}, run="root#b")
    first = promote("toy", good.version, "champion", {"t_com": 0.9}, uri)
    rejected = promote("toy", bad.version, "champion", {"t_com": 0.9}, uri)
    assert first.promoted and first.previous is None
    assert not rejected.promoted and rejected.reasons == ["t_com 0.3 < 0.9"] and rejected.previous == "1"
    import mlflow

    client = mlflow.MlflowClient(uri)
    model = client.get_registered_model("toy")
    assert {k: str(v) for k, v in model.aliases.items()} == {
        "champion": "1"
    }  # the rejected version did not take it
    assert client.get_model_version("toy", "2").tags["promotion.champion"] == "rejected: t_com 0.3 < 0.9"
    history = json.loads(model.tags["alias.champion.history"])
    assert [(h["version"], h["verdict"].split(":")[0]) for h in history] == [
        ("1", "promoted"),
        ("2", "rejected"),
    ]
    assert resolve("models:/toy@champion", uri) == good.source


def test_the_cli_promotes_resolves_and_explains(store):
    uri = store[0]
    _register(store, {"t_com": 0.5, "i_com": 1.0})
    base = [DUOGEN, "registry"]
    rejected = subprocess.run(
        [*base, "promote", "--model", "toy", "--version", "1", "--gate", "t_com=0.9"],
        capture_output=True,
        text=True,
    )
    assert rejected.returncode == 1 and json.loads(rejected.stdout)["reasons"] == ["t_com 0.5 < 0.9"]
    passed = subprocess.run(
        [*base, "promote", "--model", "toy", "--version", "1", "--gate", "i_com=0.95"],
        capture_output=True,
        text=True,
    )
    assert passed.returncode == 0 and json.loads(passed.stdout)["promoted"] is True
    where = subprocess.run([*base, "resolve", "models:/toy@champion"], capture_output=True, text=True)
    assert where.returncode == 0 and where.stdout.strip().endswith("/artifacts")
    bad = subprocess.run(
        [*base, "promote", "--model", "toy", "--version", "1", "--gate", "t_com"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "--gate 't_com' is not METRIC=NUMBER" in bad.stderr
    missing = subprocess.run(
        [*base, "promote", "--model", "toy", "--version", "9"], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no model version toy/9" in missing.stderr
    with pytest.raises(DuoGenInputError, match="is not a registry URI"):
        resolve("s3://bucket/pair", uri)
