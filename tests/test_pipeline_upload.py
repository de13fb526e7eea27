"""`duogen pipeline upload` (the chart's post-install Job) against a stand-in Kubeflow Pipelines API.

No KFP backend can run here, so a small HTTP server on 127.0.0.1 answers the v2beta1 REST paths `kfp.Client`
calls (list pipelines by name, upload a pipeline, list its versions, upload a version) and keeps what it was
sent. Like the real backend, uploading a new pipeline also makes its first version, carrying the pipeline's
name and description. The client side (request building, multipart upload, paging) is kfp's own."""

from __future__ import annotations

import json
import threading
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from duogen.cli import main


class KfpApi(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.uploads: list[tuple[str, bytes]] = []  # (path, file bytes)
        self.tag = "2.15.0"  # the backend's release, as /apis/v2beta1/healthz reports it


class _Handler(BaseHTTPRequestHandler):
    server: KfpApi

    def log_message(self, *args):
        pass

    def _send(self, body: dict, status: int = 200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/apis/v2beta1/healthz":  # kubeflow/pipelines 2.15.0 backend/src/apiserver/main.go
            return self._send(
                {"commit_sha": "x", "tag_name": self.server.tag, "multi_user": False, "pipeline_store": "db"}
            )
        if url.path == "/apis/v2beta1/pipelines":
            predicates = json.loads(query.get("filter", "{}")).get("predicates", [])
            found = [
                p
                for p in self.server.pipelines.values()
                if all(p[q["key"]] == q["stringValue"] for q in predicates)
            ]
            return self._send({"pipelines": found, "total_size": len(found)} if found else {})
        parts = url.path.split("/")  # /apis/v2beta1/pipelines/{id}/versions
        if len(parts) == 6 and parts[5] == "versions":
            versions = self.server.versions.get(parts[4], [])
            size, start = int(query.get("page_size", 10)), int(query.get("page_token") or 0)
            page = versions[start : start + size]
            more = start + size < len(versions)
            return self._send(
                {"pipeline_versions": page, "next_page_token": str(start + size) if more else ""}
            )
        self._send({"error": f"no route {url.path}"}, 404)

    def do_POST(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        (part,) = [
            p
            for p in message.iter_parts()
            if p.get_param("name", header="content-disposition") == "uploadfile"
        ]
        self.server.uploads.append((url.path, part.get_payload(decode=True)))
        if url.path == "/apis/v2beta1/pipelines/upload":
            pid = str(uuid.uuid4())
            pipeline = {
                "pipeline_id": pid,
                "display_name": query["name"],
                "description": query.get("description", ""),
            }
            self.server.pipelines[pid] = pipeline
            first = {**pipeline, "pipeline_version_id": str(uuid.uuid4())}
            self.server.versions[pid] = [first]
            return self._send(pipeline)
        if url.path == "/apis/v2beta1/pipelines/upload_version":
            pid = query["pipelineid"]
            version = {
                "pipeline_id": pid,
                "pipeline_version_id": str(uuid.uuid4()),
                "display_name": query["name"],
                "description": query.get("description", ""),
            }
            self.server.versions[pid].append(version)
            return self._send(version)
        self._send({"error": f"no route {url.path}"}, 404)


@pytest.fixture
def kfp_api():
    server = KfpApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _upload(capsys, host: str, *extra: str) -> dict:
    assert main(["pipeline", "upload", "--host", host, *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_upload_ships_the_compiled_pipeline_once_and_a_changed_one_as_a_new_version(
    kfp_api, tmp_path, capsys
):
    host = f"http://127.0.0.1:{kfp_api.server_address[1]}"
    compiled = tmp_path / "compiled.yaml"
    assert main(["pipeline", "compile", "-o", str(compiled)]) == 0
    capsys.readouterr()

    first = _upload(capsys, host)  # what the chart's Job runs: compile inside the image, then upload
    assert first["uploaded"] and first["created_pipeline"]
    assert kfp_api.uploads == [("/apis/v2beta1/pipelines/upload", compiled.read_bytes())]
    (pipeline,) = kfp_api.pipelines.values()
    assert pipeline["display_name"] == "duogen" and pipeline["description"].endswith(first["version"])

    again = _upload(capsys, host)  # helm upgrade with the same image: nothing new to upload
    assert again["uploaded"] is False and len(kfp_api.uploads) == 1
    assert again["version_id"] == kfp_api.versions[pipeline["pipeline_id"]][0]["pipeline_version_id"]

    changed = tmp_path / "changed.yaml"
    changed.write_bytes(compiled.read_bytes() + b"\n# changed\n")
    for _ in range(120):  # more than one page of versions: the lookup must page
        kfp_api.versions[pipeline["pipeline_id"]].append(
            {"pipeline_version_id": str(uuid.uuid4()), "display_name": "other", "description": ""}
        )
    new = _upload(capsys, host, "--package", str(changed))
    assert new["uploaded"] and new["version"] != first["version"]
    assert kfp_api.uploads[-1] == ("/apis/v2beta1/pipelines/upload_version", changed.read_bytes())
    assert kfp_api.versions[pipeline["pipeline_id"]][-1]["display_name"] == new["version"]
    assert _upload(capsys, host, "--package", str(changed))["uploaded"] is False
    assert len(kfp_api.uploads) == 2


def test_an_older_backend_than_the_pipeline_needs_is_refused_by_name(kfp_api, capsys):
    host = f"http://127.0.0.1:{kfp_api.server_address[1]}"
    kfp_api.tag = "2.5.0"
    with pytest.raises(RuntimeError, match=r"at http://127.0.0.1:\d+ is 2.5.0; this pipeline needs 2.15.0"):
        main(["pipeline", "upload", "--host", host])
    assert kfp_api.uploads == []
    kfp_api.tag = "unknown"  # a dev build reports no release: nothing to check against
    assert _upload(capsys, host)["uploaded"]


def test_compile_for_a_cluster_sets_the_defaults_the_image_and_the_pull_secret(tmp_path):
    """`--profile cluster` defaults, every step's image, and the pull secret exactly as kfp-kubernetes'
    own `set_image_pull_secrets` writes it (compared on a one-step pipeline compiled by kfp itself)."""
    import yaml
    from kfp import compiler, dsl, kubernetes

    out = tmp_path / "cluster.yaml"
    argv = ["pipeline", "compile", "-o", str(out), "--profile", "cluster", "--default", "pages=9"]
    argv += ["--image", "registry.example/duogen:2", "--image-pull-secret", "regcred"]
    assert main(argv) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {k: v.get("defaultValue") for k, v in params.items()}
    assert defaults["root"].startswith("s3://") and defaults["launcher"] == "pytorchjob"
    assert defaults["deploy_target"] == "kserve" and defaults["tracking_uri"].startswith("http://")
    assert defaults["pages"] == 9
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/duogen:2"}

    def step(x: int):
        print(x)

    step.__annotations__ = {"x": int}  # real types: this module's `from __future__` makes them strings
    step = dsl.component(step)

    @dsl.pipeline
    def one():
        kubernetes.set_image_pull_secrets(step(x=1), ["regcred"])

    compiler.Compiler().compile(one, str(tmp_path / "one.yaml"))
    _, theirs = yaml.safe_load_all((tmp_path / "one.yaml").read_text())
    want = theirs["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-step"]["imagePullSecret"]
    ours = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(ours) == set(spec["deploymentSpec"]["executors"])
    assert all(e["imagePullSecret"] == want for e in ours.values())
