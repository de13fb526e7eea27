"""The registry as the chart runs it: a real `mlflow server --serve-artifacts --artifacts-destination
s3://duogen/mlflow` process (sqlite backend) over a real S3 (SeaweedFS), both on 127.0.0.1.

- A registered pair is an MLflow pyfunc model: `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` answers,
  and so does `mlflow models serve`.
- The storage URI the deploy path hands KServe is one KServe's own storage initializer code fetches
  (`kserve_storage.Storage.download`, kserve-storage 0.21.0, the package the `kserve-storage-initializer`
  image runs), and the predictor loads what it wrote; the raw `mlflow-artifacts:/` location is refused by
  that same code ("Cannot recognize storage type", kserve-storage 0.21.0 `kserve_storage.py`
  `Storage._download_from_uri`) — the finding this guards against.
- The predictor serving the alias comes up before the alias exists (not ready, retrying), turns ready when
  it is set, and swaps in the new version when the alias moves (`--reload-interval`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch

from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset
from duogen.platform.launch import free_port
from duogen.platform.model_store import local_pair_dir
from duogen.platform.registry import promote, register_pair, resolve

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import s3_server  # noqa: E402
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")
DESTINATION = "s3://duogen/mlflow"


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Until `url` answers 200; fails with the process's log when it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[:4]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    work = tmp_path_factory.mktemp("release")
    with s3_server(work / "s3") as s3:
        s3.create_bucket("duogen")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **s3.env, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--workers", "1"]
        command += ["--serve-artifacts", "--artifacts-destination", DESTINATION]
        log = work / "mlflow.log"
        server = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            _wait_for(f"{url}/health", server, log)
            pairs = {}
            for seed in (0, 1):  # two different pairs: versions 1 and 2
                pairs[seed] = work / f"pair-{seed}"
                DuoGenPair.build(get_preset("tiny"), seed=seed).save_pretrained(pairs[seed])
            yield SimpleNamespace(url=url, s3=s3, work=work, pairs=pairs)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _client_env(monkeypatch, release) -> None:
    """A client of the release (a pipeline step, the predictor): MLflow's URL only; artifacts go through the
    server's proxy, so no S3 credentials are needed for MLflow itself."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", release.url)
    for key in release.s3.env:
        monkeypatch.delenv(key, raising=False)


def _same_weights(a: Path, b: Path) -> bool:
    x, y = DuoGenPair.from_pretrained(a), DuoGenPair.from_pretrained(b)
    return all(
        torch.equal(p, q) for p, q in zip(x.state_dict().values(), y.state_dict().values(), strict=True)
    )


@pytest.fixture(scope="module")
def champion(release):
    """`duogen-toy` version 1 (pair 0, t_com 0.9) registered through the server and promoted."""
    v = register_pair(release.pairs[0], "duogen-toy", {"t_com": 0.9}, {}, "root#one", release.url, "exp")
    assert promote("duogen-toy", v.version, "champion", {"t_com": 0.5}, release.url).promoted
    return v


def test_a_registered_pair_loads_by_alias_as_an_mlflow_model_and_answers(release, champion, monkeypatch):
    """Fails when versions are plain artifacts (no MLmodel: "Could not find an 'MLmodel' configuration
    file"), when the pyfunc wraps another folder than the pair, or when gates read metrics from elsewhere
    than the version's run."""
    import mlflow
    import pandas as pd

    _client_env(monkeypatch, release)
    low = register_pair(release.pairs[1], "duogen-low", {"t_com": 0.2}, {}, "root#low", release.url, "exp")
    refused = promote("duogen-low", low.version, "champion", {"t_com": 0.5}, release.url)
    assert refused.reasons == ["t_com 0.2 < 0.5"]  # the version's run metrics, as logged
    model = mlflow.pyfunc.load_model("models:/duogen-toy@champion")
    assert model.metadata.get_input_schema().input_names() == ["prompt", "image"]
    example = model.metadata.load_input_example(model.metadata.get_model_info().artifact_path)
    assert example is not None  # logged with the model, shown in the MLflow UI
    out = model.predict(
        pd.DataFrame({"prompt": ["Draw a red circle."], "image": [""]}), {"max_new_tokens": 6}
    )
    assert list(out.columns) == ["text", "images"] and isinstance(json.loads(out["images"][0]), list)
    from duogen.model.generate import Answer, GenerationOptions, generate

    direct = Answer()
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Draw a red circle."}]}]
    pair = DuoGenPair.from_pretrained(release.pairs[0])
    for event in generate(pair, conversation, GenerationOptions(max_new_tokens=6)):
        direct.add(event)
    assert out["text"][0] == direct.text  # the registered pair itself answered


def test_kserve_storage_initializer_fetches_the_resolved_uri_and_the_predictor_loads_it(
    release, champion, monkeypatch, tmp_path
):
    """Fails when the deploy path hands KServe `mlflow-artifacts:/...` (the init container crash-loops) or
    a wrong translation of it (no such key)."""
    from kserve_storage import Storage

    _client_env(monkeypatch, release)
    raw = resolve("models:/duogen-toy@champion", release.url, DESTINATION.replace("duogen", "x", 1))
    uri = resolve("models:/duogen-toy@champion", release.url, DESTINATION)
    assert uri.startswith(DESTINATION + "/") and raw != uri
    from mlflow import MlflowClient

    proxied = MlflowClient().get_model_version_download_uri("duogen-toy", champion.version)
    assert proxied.startswith("mlflow-artifacts:")
    # the init container's environment: the S3 credentials and endpoint from the ServiceAccount's Secret
    for key, value in release.s3.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(Exception, match="Cannot recognize storage type"):
        Storage.download(proxied, str(tmp_path / "refused"))
    fetched = Storage.download(uri, str(tmp_path / "mnt-models"))
    assert (Path(fetched) / "MLmodel").exists()
    assert _same_weights(local_pair_dir(fetched), release.pairs[0])  # what `--model=/mnt/models` loads


def test_the_predictor_waits_for_the_alias_then_follows_it(release, tmp_path, monkeypatch):
    """The chart's InferenceService serves `models:/NAME@ALIAS`: its pod may start before the first
    promotion (it must retry, not give up) and must serve each newly promoted version. Fails when a failed
    load is never retried, when the alias is read once, or when the cache reuses the old version's files."""
    _client_env(monkeypatch, release)
    env = {"MLFLOW_TRACKING_URI": release.url, "DUOGEN_MODEL_CACHE": str(tmp_path / "cache")}
    command = [DUOGEN, "serve", "--model", "models:/duogen-follow@live", "--reload-interval", "1"]
    with predictor_server(command, tmp_path / "server.log", env=env, timeout=60, ready=False) as server:
        time.sleep(3)
        assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
        assert not server.healthy()  # nothing promoted yet: alive, not ready
        first = register_pair(release.pairs[0], "duogen-follow", {}, {}, "root#f1", release.url, "exp")
        promote("duogen-follow", first.version, "live", {}, release.url)
        assert _served_version(server, deadline=120) == "1"
        second = register_pair(release.pairs[1], "duogen-follow", {}, {}, "root#f2", release.url, "exp")
        promote("duogen-follow", second.version, "live", {}, release.url)
        assert _served_version(server, deadline=120, other_than="1") == "2"
        reply = httpx.post(
            f"{server.url}/v1/models/duogen:predict",
            json={"instances": [{"prompt": "Draw a red circle.", "max_new_tokens": 4}]},
            timeout=120,
        )
        assert reply.status_code == 200 and reply.json()["predictions"][0]["finish_reason"]
    log = (tmp_path / "server.log").read_text()
    assert "model failed to load" in log and "retry_in_s" in log  # the first tries, before the promotion


def _served_version(server, deadline: float, other_than: str | None = None) -> str | None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            meta = httpx.get(f"{server.url}/v2/models/duogen", timeout=5)
            versions = meta.json().get("versions") if meta.status_code == 200 else None
            if server.healthy() and versions and versions[0] != other_than:
                return versions[0]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no new version served within {deadline} s:\n{server.log.read_text()[-2000:]}")


def test_mlflow_models_serve_runs_the_registered_version(release, champion, tmp_path):
    """MLflow's own model server (`mlflow models serve -m models:/NAME@ALIAS --env-manager local`, in this
    environment) answers `/invocations`. Fails when the pyfunc cannot be loaded outside DuoGen's predictor
    (a pickled closure, a missing artifact) or its signature refuses the documented request."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": release.url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # its uvicorn
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/duogen-toy@champion",
    ]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server, log)
        body = {
            "dataframe_split": {"columns": ["prompt", "image"], "data": [["Draw a red circle.", ""]]},
            "params": {"max_new_tokens": 6},
        }
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        (prediction,) = reply.json()["predictions"]
        assert set(prediction) == {"text", "images"} and isinstance(json.loads(prediction["images"]), list)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
