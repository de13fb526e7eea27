"""`duogen pipeline upload` (the chart's post-install Job) against a stand-in Kubeflow Pipelines API.

No KFP backend can run here, so a small HTTP server on 127.0.0.1 answers the v2beta1 REST paths `kfp.Client`
calls (list pipelines by name, upload a pipeline, list its versions, upload a version) and keeps what it was
sent. Like the real backend, uploading a new pipeline also makes its first version, carrying the pipeline's
name and description; pipelines live in a namespace (multi-user Kubeflow's profile, "" for shared ones), a
list answers only the namespace it names (kubeflow/pipelines 2.15.0 backend/src/apiserver/server/
pipeline_server.go `listPipelines`: the request's namespace, empty = shared, is the filter's reference key),
and a second pipeline of the same name in one namespace is refused (409, as the backend's unique
display-name index does). The client side (request building, multipart upload, paging) is kfp's own."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from duogen.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler  # noqa: E402


class KfpApi(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.uploads: list[tuple[str, bytes]] = []  # (path, file bytes)
        self.tag = "2.15.0"  # the backend's release, as /apis/v2beta1/healthz reports it


class _Handler(JSONHandler):
    server: KfpApi

    def _send(self, body: dict, status: int = 200):
        self.send_json(status, body)

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
                if p["namespace"] == query.get("namespace", "")
                and all(p[q["key"]] == q["stringValue"] for q in predicates)
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
            namespace = query.get("namespace", "")
            taken = [
                p
                for p in self.server.pipelines.values()
                if (p["display_name"], p["namespace"]) == (query["name"], namespace)
            ]
            if taken:
                return self._send({"error": f"pipeline {query['name']} already exists"}, 409)
            pid = str(uuid.uuid4())
            pipeline = {
                "pipeline_id": pid,
                "display_name": query["name"],
                "description": query.get("description", ""),
                "namespace": namespace,
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
    # the S3 Secret is required (components/pipeline/pipeline.py `_on_cluster`): a step whose Secret is
    # missing in the runner's namespace must fail to start naming it, not run without credentials
    secrets = [s for e in ours.values() for s in e.get("secretAsEnv", [])]
    assert len(secrets) == len(ours) and all(s["optional"] is False for s in secrets)


def test_a_multi_user_upload_finds_its_own_pipeline_in_the_profile_namespace(kfp_api, tmp_path, capsys):
    """Multi-user Kubeflow (the chart's Job with `--namespace`): the second upload must find the pipeline the
    first one made in the profile namespace. The bug it catches: kfp's `get_pipeline_id` lists shared
    pipelines only, so every `helm upgrade` tried to create the pipeline again and the backend refused it."""
    host = f"http://127.0.0.1:{kfp_api.server_address[1]}"
    compiled = tmp_path / "compiled.yaml"
    assert main(["pipeline", "compile", "-o", str(compiled)]) == 0
    capsys.readouterr()
    argv = ["--package", str(compiled), "--namespace", "team-a"]
    first = _upload(capsys, host, *argv)
    (pipeline,) = kfp_api.pipelines.values()
    assert first["created_pipeline"] and pipeline["namespace"] == "team-a"

    again = _upload(capsys, host, *argv)  # helm upgrade, same image
    assert again["uploaded"] is False and again["pipeline_id"] == pipeline["pipeline_id"]
    changed = tmp_path / "changed.yaml"
    changed.write_bytes(compiled.read_bytes() + b"\n# changed\n")
    new = _upload(capsys, host, "--package", str(changed), "--namespace", "team-a")
    assert new["uploaded"] and new["pipeline_id"] == pipeline["pipeline_id"]
    assert len(kfp_api.pipelines) == 1  # a new version of the same pipeline, not a second pipeline

    other = _upload(capsys, host, "--package", str(compiled), "--namespace", "team-b")
    assert other["created_pipeline"] and len(kfp_api.pipelines) == 2  # another profile has its own


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers: a KFP Service whose pods do not reply."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def test_without_kfp_the_upload_says_why_and_exits_0_within_its_bound(silent_port, tmp_path, capsys):
    """The chart's post-install Job on a cluster without KFP: it must finish well inside helm's 5-minute
    hook timeout and succeed, saying why nothing was uploaded and how to upload later. The bugs it catches:
    a Job retrying for ~10 minutes (helm reports the release FAILED), or one that exits 0 silently."""
    compiled = tmp_path / "compiled.yaml"
    compiled.write_text("unused: the API never answers\n")
    for host in (f"http://127.0.0.1:{silent_port}", "http://ml-pipeline.no-such-namespace.invalid:8888"):
        start = time.monotonic()
        argv = ["pipeline", "upload", "--host", host, "--package", str(compiled), "--wait", "3"]
        assert main([*argv, "--skip-if-unreachable"]) == 0
        assert time.monotonic() - start < 3 + 10  # the wait, one last timeout, no retries beyond
        out, err = capsys.readouterr()
        line = json.loads(out.strip().splitlines()[-1])
        assert line["uploaded"] is False and line["host"] == host
        for said in (f"no Kubeflow Pipelines API answered at {host} within 3 s", "helm upgrade"):
            assert said in line["skipped"] and said in err
        with pytest.raises(RuntimeError, match="no Kubeflow Pipelines API answered"):
            main(argv)  # without the flag (by hand), a silent API is an error
