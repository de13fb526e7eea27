"""Deploying to KServe. No Kubernetes API server can run here, so: the generated InferenceService is
validated against KServe's CRD (tests/data/crds) with jsonschema, and the create / patch / wait / failure
paths run through the kserve SDK's client against a stand-in HTTP server on 127.0.0.1 that answers the
InferenceService REST paths (validating what it is sent). Its `status.url` points at a real predictor server
(`duogen serve` on a tiny pair), so the pipeline's deploy step asks that server over HTTP as it would ask
the InferenceService."""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from duogen.platform.inferenceservice import DeployFailed, ServingSettings, as_dict, build, deploy

sys.path.insert(0, str(Path(__file__).parent))
from k8s_checks import policy_violations  # noqa: E402
from serving_server import predictor_server  # noqa: E402

CRD = Path(__file__).parent / "data" / "crds" / "serving.kserve.io_inferenceservices.yaml"
DUOGEN = str(Path(sys.executable).parent / "duogen")
PATH = re.compile(r"/apis/serving.kserve.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?")


@pytest.fixture(scope="module")
def schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]


def test_the_inferenceservice_validates_and_carries_the_serving_settings(schema):
    s = ServingSettings(namespace="ml", gpus=1, min_replicas=1, max_replicas=3, auth_secret="duogen-auth")
    isvc = as_dict(build("duogen-toy", "s3://models/duogen/1/model", s))
    jsonschema.validate(isvc, schema)
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "duogen"} and model["runtime"] == "duogen"
    assert model["storageUri"] == "s3://models/duogen/1/model"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["env"] == [
        {"name": "DUOGEN_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "duogen-auth", "key": "token"}}}
    ]
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["timeout"]) == (1, 3, 300)
    assert predictor["serviceAccountName"] == "duogen-s3"
    assert policy_violations([isvc]) == []  # non-root pods, resources, the token only from its Secret
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


class StandIn:
    """The InferenceService paths of an API server; a service turns Ready after `polls` reads."""

    def __init__(self, schema: dict, url: str, polls: int = 1, ready: bool = True) -> None:
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["content-length"])))

            def do_POST(self):
                body = self._body()
                stand_in.calls.append(("POST", body["metadata"]["name"]))
                try:
                    jsonschema.validate(body, schema)
                except jsonschema.ValidationError as err:
                    return self._send(422, {"kind": "Status", "reason": "Invalid", "message": err.message})
                stand_in.objects[body["metadata"]["name"]] = {**body, "_reads": 0}
                self._send(201, body)

            def do_PATCH(self):
                name = PATH.fullmatch(urlparse(self.path).path).group(2)
                body = self._body()
                stand_in.calls.append(("PATCH", name))
                jsonschema.validate(body, schema)
                stand_in.objects[name] = {**body, "_reads": 0}
                self._send(200, body)

            def do_GET(self):
                name = PATH.fullmatch(urlparse(self.path).path).group(2)
                found = stand_in.objects.get(name)
                if found is None:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                found["_reads"] += 1
                ok = ready and found["_reads"] > polls
                condition = {"type": "Ready", "status": "True" if ok else "False"}
                if not ok:
                    condition |= {"reason": "RevisionMissing", "message": "storage-initializer: no such key"}
                status = {"conditions": [condition], **({"url": url} if ok else {})}
                self._send(200, {**{k: v for k, v in found.items() if k != "_reads"}, "status": status})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": host}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "stand-in", "user": "u", "namespace": "ml"}}],
            "current-context": "c",
        }


def test_deploy_creates_then_patches_and_waits_for_ready(schema):
    server = StandIn(schema, url="http://duogen-toy.ml.example.com")
    try:
        s = ServingSettings(namespace="ml")
        logs: list[str] = []
        url = deploy("duogen-toy", "s3://m/1", s, server.kubeconfig, poll_seconds=0.05, log=logs.append)
        again = deploy("duogen-toy", "s3://m/2", s, server.kubeconfig, poll_seconds=0.05, log=logs.append)
        assert url == again == "http://duogen-toy.ml.example.com"
        assert server.calls == [("POST", "duogen-toy"), ("PATCH", "duogen-toy")]
        assert server.objects["duogen-toy"]["spec"]["predictor"]["model"]["storageUri"] == "s3://m/2"
        assert logs == [
            "created InferenceService ml/duogen-toy -> s3://m/1",
            "patched InferenceService ml/duogen-toy -> s3://m/2",
        ]
    finally:
        server.httpd.shutdown()


def test_a_service_that_never_gets_ready_fails_with_its_condition(schema):
    server = StandIn(schema, url="", ready=False)
    try:
        s = ServingSettings(namespace="ml", ready_timeout=0.3)
        with pytest.raises(
            DeployFailed, match="not ready within 0 s: Ready: RevisionMissing storage-initializer"
        ):
            deploy("duogen-toy", "s3://m/1", s, server.kubeconfig, poll_seconds=0.05)
    finally:
        server.httpd.shutdown()


def test_the_deploy_step_resolves_the_alias_deploys_and_asks_the_service(schema, tmp_path, monkeypatch):
    from duogen.components.pipeline.deploy_component import deploy as step
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset
    from duogen.platform.registry import promote, register_pair

    pair = tmp_path / "pair"
    DuoGenPair.build(get_preset("toy"), seed=0).save_pretrained(pair)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "artifacts").as_uri()
    version = register_pair(pair, "duogen-toy", {"t_com": 1.0}, {}, "r", tracking, "exp", artifacts)
    assert promote("duogen-toy", version.version, "champion", {}, tracking).promoted
    with predictor_server([DUOGEN, "serve", "--model", str(pair)], tmp_path / "server.log") as server:
        stand_in = StandIn(schema, url=server.url)
        (tmp_path / "kubeconfig").write_text(json.dumps(stand_in.kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.setattr("duogen.platform.inferenceservice.time.sleep", lambda s: None)
        page = step.python_func(
            model_name="duogen-toy",
            alias="champion",
            target="kserve",
            serving={"namespace": "ml"},
            root=str(tmp_path / "root"),
            run_name="r",
            tracking_uri=tracking,
            experiment="exp",
            kfp_run_id="k1",
            seed=0,
        )
        stand_in.httpd.shutdown()
    sent = stand_in.objects["duogen-toy"]["spec"]["predictor"]["model"]["storageUri"]
    assert sent == version.source  # the alias, resolved for KServe's storage initializer
    record = json.loads((tmp_path / "root" / "r" / "deploy-champion" / "_step.json").read_text())["outputs"]
    assert page == record["page"] and record["url"] == f"{server.url}/openai/v1/responses"
    html = Path(page).read_text()
    assert html.count("<img") == 1 + record["images"] and "DuoGen answers over HTTP" in html
    assert re.search(r"POST /openai/v1/responses.*200", (tmp_path / "server.log").read_text())
