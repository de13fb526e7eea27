"""Deploying to KServe: a rollout of the chart's InferenceService (rendered from helm/duogen). No Kubernetes
API server can run here, so the rollout / wait / failure paths run through the kserve SDK's client against
a stand-in HTTP server on 127.0.0.1 that answers the InferenceService REST paths as the API server does
(JSON merge patch, `metadata.generation` bumped on each write; the result validated against KServe's CRD in
tests/data/crds). Its `status.address.url` points at a real predictor server (`duogen serve` on a toy
pair), so the pipeline's deploy step asks that server over HTTP as it would ask the InferenceService;
`status.url` is an external domain that does not resolve, as a Serverless one may not from a pipeline pod."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from duogen.platform.inferenceservice import DeployFailed, ServingSettings, deploy

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler, serve  # noqa: E402
from serving_server import predictor_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRD = Path(__file__).parent / "data" / "crds" / "serving.kserve.io_inferenceservices.yaml"
DUOGEN = str(Path(sys.executable).parent / "duogen")
PATH = re.compile(r"/apis/serving.kserve.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?")


@pytest.fixture(scope="module")
def schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class StandIn:
    """The InferenceService paths of an API server. Each write bumps `metadata.generation`; the controller
    "sees" it (`status.observedGeneration`) and reports Ready after `polls` reads, Ready of the previous
    generation meanwhile. `status.address.url` is `url` (in-cluster), `status.url` an external domain."""

    def __init__(self, schema: dict, url: str, polls: int = 1, ready: bool = True) -> None:
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        stand_in = self

        class Handler(JSONHandler):
            _send = JSONHandler.send_json
            _body = JSONHandler.json_body

            def do_PATCH(self):
                name = PATH.fullmatch(urlparse(self.path).path).group(2)
                assert self.headers["content-type"] == "application/merge-patch+json"
                stand_in.calls.append(("PATCH", name))
                old = copy.deepcopy(stand_in.objects[name])
                new = merge_patch({k: v for k, v in old.items() if not k.startswith("_")}, self._body())
                jsonschema.validate(new, schema)
                seen = old["metadata"]["generation"]
                new["metadata"]["generation"] = seen + 1
                stand_in.objects[name] = {**new, "_reads": 0, "_seen": seen}
                self._send(200, new)

            def do_GET(self):
                name = PATH.fullmatch(urlparse(self.path).path).group(2)
                found = stand_in.objects.get(name)
                if found is None:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                found["_reads"] += 1
                ok = ready and found["_reads"] > polls
                seen = found["metadata"]["generation"] if ok else found["_seen"]
                up = ready and (ok or seen)
                condition = {"type": "Ready", "status": "True" if up else "False"}
                if not up:
                    condition |= {"reason": "RevisionMissing", "message": "storage-initializer: no such key"}
                status = {"conditions": [condition], "observedGeneration": seen}
                if up:
                    status |= {"url": f"http://{name}.ml.example.com", "address": {"url": url}}
                shown = {k: v for k, v in found.items() if not k.startswith("_")}
                self._send(200, {**shown, "status": status})

        self.httpd, host = serve(Handler)
        self.kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": host}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "stand-in", "user": "u", "namespace": "ml"}}],
            "current-context": "c",
        }


def _with_chart(server: StandIn) -> dict:
    """The stand-in API server holding the chart's InferenceService (generation 1, Ready)."""
    chart = _chart_inferenceservice()
    server.objects["duogen"] = {**chart, "metadata": {**chart["metadata"], "generation": 1}, "_reads": 0}
    server.objects["duogen"]["_seen"] = 1
    return chart


def test_deploy_rolls_out_the_charts_service_and_waits_for_the_new_generation(schema):
    """Fails when a deploy replaces the service's spec, when it accepts the Ready of the previous generation
    (the old pods), or when it returns the external `status.url` instead of the in-cluster
    `status.address.url`."""
    server = StandIn(schema, url="http://duogen.ml.svc.cluster.local", polls=3)
    try:
        chart = _with_chart(server)
        s = ServingSettings(namespace="ml")
        logs: list[str] = []
        model = "models:/duogen@champion"
        url = deploy(model, s, "1", server.kubeconfig, poll_seconds=0.01, log=logs.append)
        again = deploy(model, s, "2", server.kubeconfig, poll_seconds=0.01, log=logs.append)
        assert url == again == "http://duogen.ml.svc.cluster.local"
        assert server.calls == [("PATCH", "duogen"), ("PATCH", "duogen")]
        obj = server.objects["duogen"]
        assert obj["_reads"] > 3 and obj["metadata"]["generation"] == 3  # waited past the old Ready
        spec = copy.deepcopy(obj["spec"])
        assert spec["predictor"].pop("annotations") == {"duogen.dev/model-version": "2"}
        assert spec == chart["spec"]  # nothing but the rollout annotation changed
        assert logs == [
            "rolled out InferenceService ml/duogen: models:/duogen@champion version 1",
            "rolled out InferenceService ml/duogen: models:/duogen@champion version 2",
        ]
    finally:
        server.httpd.shutdown()


def test_a_missing_service_fails_saying_to_install_the_chart(schema):
    """The service is defined once, by the chart: without it the step must say so, not invent one."""
    server = StandIn(schema, url="")
    try:
        with pytest.raises(DeployFailed, match="ml/duogen does not exist: install the chart there"):
            deploy("models:/duogen@champion", ServingSettings(namespace="ml"), "1", server.kubeconfig)
        assert server.calls == []
    finally:
        server.httpd.shutdown()


def test_a_service_that_never_gets_ready_fails_with_its_condition(schema):
    server = StandIn(schema, url="", ready=False)
    try:
        _with_chart(server)
        s = ServingSettings(namespace="ml", ready_timeout=0.3)
        with pytest.raises(
            DeployFailed, match="not ready within 0 s: Ready: RevisionMissing storage-initializer"
        ):
            deploy("models:/duogen-toy@champion", s, "1", server.kubeconfig, poll_seconds=0.05)
    finally:
        server.httpd.shutdown()


def _chart_inferenceservice() -> dict:
    """The chart's InferenceService as `helm install duogen helm/duogen -n ml` creates it."""
    import helm_python as helm
    from k8s_checks import documents

    rendered = helm.Chart.load(ROOT / "helm" / "duogen").render(
        {}, name="duogen", namespace="ml", is_install=True
    )
    found = [
        d for d in documents(rendered["duogen/templates/serving.yaml"]) if d["kind"] == "InferenceService"
    ]
    (isvc,) = found
    isvc["metadata"].setdefault("namespace", "ml")
    return isvc


def test_the_deploy_step_rolls_out_the_charts_service_and_asks_it(schema, tmp_path, monkeypatch):
    """The pipeline's deploy step on a cluster where the chart is installed: it must roll out the chart's
    InferenceService (no second service) and ask it at its in-cluster address. Fails when it creates a
    service of its own, overwrites the chart's spec, or asks `status.url` (unresolvable here, as an external
    Serverless domain is from a pipeline pod)."""
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
    chart = _chart_inferenceservice()  # what the stand-in holds: the chart's service
    with predictor_server([DUOGEN, "serve", "--model", str(pair)], tmp_path / "server.log") as server:
        stand_in = StandIn(schema, url=server.url)
        stand_in.objects["duogen"] = {
            **chart,
            "metadata": {**chart["metadata"], "generation": 1},
            "_reads": 0,
        }
        stand_in.objects["duogen"]["_seen"] = 1
        (tmp_path / "kubeconfig").write_text(json.dumps(stand_in.kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.setattr("duogen.platform.inferenceservice.time.sleep", lambda s: None)
        page = step.python_func(
            model_name="duogen-toy",
            alias="champion",
            target="kserve",
            serving={"name": "duogen", "namespace": "ml"},
            root=str(tmp_path / "root"),
            run_name="r",
            tracking_uri=tracking,
            experiment="exp",
            kfp_run_id="k1",
            seed=0,
        )
        stand_in.httpd.shutdown()
    assert stand_in.calls == [("PATCH", "duogen")]
    rolled = {k: v for k, v in stand_in.objects["duogen"].items() if not k.startswith("_")}
    assert rolled["spec"]["predictor"].pop("annotations") == {"duogen.dev/model-version": version.version}
    assert rolled["spec"] == chart["spec"]  # nothing but the rollout annotation changed
    record = json.loads((tmp_path / "root" / "r" / "deploy-champion" / "_step.json").read_text())["outputs"]
    assert page == record["page"] and record["url"] == f"{server.url}/openai/v1/responses"
    assert record["version"] == version.version
    html = Path(page).read_text()
    assert html.count("<img") == 1 + record["images"] and "DuoGen answers over HTTP" in html
    assert re.search(r"POST /openai/v1/responses.*200", (tmp_path / "server.log").read_text())
