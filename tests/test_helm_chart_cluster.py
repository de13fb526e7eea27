"""The Helm chart against the cluster's controllers and installs (rendered as in tests/chart_render.py): the
pipeline runner's RBAC and NetworkPolicies in both KFP installs, both KServe deployment modes (Knative's
default feature flags), the upload hook, the served alias, MLflow's schema upgrade and ingress, GitOps."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from chart_render import CHART, NS, _merged, _parse_duogen, _secret_refs, _values, by_kind, render  # noqa: E402
from k8s_checks import (  # noqa: E402
    knative_default_features,
    knative_violations,
)


def test_rbac_grants_the_pipeline_runner_what_its_steps_call_and_nothing_more():
    objects, _ = render(_values(CHART / "ci" / "auth-values.yaml"))
    (role,) = by_kind(objects, "Role").values()
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert not any("*" in item for item in granted)
    assert {(g, r) for g, r, _ in granted} == {
        ("kubeflow.org", "pytorchjobs"),
        ("serving.kserve.io", "inferenceservices"),
        ("", "pods"),
        ("", "pods/log"),
    }
    assert not {v for _, _, v in granted} & {"deletecollection", "escalate", "bind", "impersonate", "update"}
    # the PyTorchJob launcher's calls, as recorded against the stand-in API (tests/test_pytorchjob.py):
    # exactly these verbs, no more (delete only ever removes this run's failed job)
    assert {v for g, r, v in granted if r == "pytorchjobs"} == {"create", "get", "delete"}
    needed = {("serving.kserve.io", "inferenceservices", v) for v in ("create", "get", "patch")} | {
        ("", "pods/log", "get"),
        ("", "pods", "list"),
    }  # platform/pytorchjob.py and inferenceservice.py
    assert needed <= granted
    (binding,) = by_kind(objects, "RoleBinding").values()
    # standalone KFP: its pods run in `kubeflow` as pipeline-runner, not in the release's namespace
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    multi, _ = render(_values("kfp-multi-user-values.yaml"))
    (binding,) = by_kind(multi, "RoleBinding").values()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": NS}]
    assert "ClusterRole" not in {o["kind"] for o in objects}


def _peers(policy: dict) -> list[dict]:
    return [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]


def test_network_policies_admit_this_and_the_runners_namespace_and_select_the_real_pods():
    """Standalone KFP's pods run in `kubeflow`: MLflow and MinIO must admit that namespace too (the bug:
    same-namespace only, so every pipeline step timed out on MLflow); multi-user needs nothing more."""
    objects, _ = render(_values(CHART / "ci" / "postgres-values.yaml"))
    policies = by_kind(objects, "NetworkPolicy")
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    runner = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}
    for name in ("duogen-mlflow", "duogen-minio", "duogen-mlflow-postgres"):
        policy, workload = policies[name], workloads[name]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        assert all(set(peer) <= {"podSelector", "namespaceSelector"} for peer in _peers(policy))  # no ipBlock
    for name in ("duogen-mlflow", "duogen-minio"):
        assert _peers(policies[name]) == [{"podSelector": {}}, runner]
    (peer,) = _peers(policies["duogen-mlflow-postgres"])  # Postgres: only MLflow
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    multi, _ = render(_values("kfp-multi-user-values.yaml"))
    for policy in by_kind(multi, "NetworkPolicy").values():
        assert all(set(peer) == {"podSelector"} for peer in _peers(policy))  # the profile namespace only


def test_what_the_pipeline_launches_fits_what_the_chart_installs():
    """The training pods' S3 Secret is the one the chart makes (release `duogen`), and the deploy step's
    default settings name the chart's InferenceService in the release's namespace."""
    from duogen.platform.inferenceservice import ServingSettings
    from duogen.platform.pytorchjob import ClusterSettings

    objects, notes = render()
    assert ClusterSettings().s3_secret in by_kind(objects, "Secret")
    assert ServingSettings().name in by_kind(objects, "InferenceService")
    assert '"name": "duogen", "namespace": "ml-team"' in notes


def test_notes_check_prerequisites_and_say_how_to_reach_everything():
    _, notes = render(_values(CHART / "ci" / "auth-values.yaml"), release="prod")
    # offline, no CRD is installed: each prerequisite is reported missing with what to install
    for api in ("kubeflow.org/v1/PyTorchJob", "serving.kserve.io/v1beta1/InferenceService"):
        assert f"MISSING  {api}" in notes
    assert "Training Operator" in notes and "KServe" in notes
    assert f"kubectl -n {NS} port-forward svc/prod-duogen-mlflow 5000:5000" in notes
    assert "<URL>/ui/" in notes and "<URL>/openai/v1" in notes
    assert "get secret prod-duogen-serving-auth" in notes


def test_knatives_default_flags_are_read_from_upstream_and_the_check_catches_what_it_names():
    """The Serverless check is a port of Knative's webhook (knative/serving knative-v1.15.2
    pkg/apis/config/features.go, fieldmask.go, k8s_validation.go): its defaults must be the copied file's,
    and it must reject the fields that made both InferenceServices fail in Serverless mode (a pod
    securityContext, nodeSelector, tolerations) while RawDeployment renders them."""
    flags = knative_default_features()
    for key in ("securitycontext", "nodeselector", "tolerations", "affinity", "init-containers"):
        assert flags[f"kubernetes.podspec-{key}"] == "Disabled"
    assert flags["kubernetes.podspec-volumes-emptydir"] == "Enabled"  # the runtime's /tmp and /dev/shm

    raw, _ = render(_values("gpu-serving-values.yaml"))  # RawDeployment: every pod field, as before
    found = knative_violations(raw)
    for field in ("securityContext", "nodeSelector", "tolerations"):
        assert any(f"pod {field}" in f for f in found), field
    assert knative_violations(raw, ("kubernetes.podspec-securitycontext", "kubernetes.podspec-nodeselector",
                                    "kubernetes.podspec-tolerations")) == []  # fmt: skip
    (runtime,) = by_kind(raw, "ServingRuntime").values()
    (container,) = runtime["spec"]["containers"]
    bad = {**container, "ports": [{"name": "http", "containerPort": 8012}], "lifecycle": {}}
    bad["securityContext"] = {**container["securityContext"], "privileged": False}
    bad["env"] = [*container["env"], {"name": "PORT", "value": "1"}]
    found = knative_violations([{**runtime, "spec": {**runtime["spec"], "containers": [bad]}}])
    for said in ("lifecycle", "securityContext.privileged", "env PORT", "port 8012", "port name 'http'"):
        assert any(said in f for f in found), said


def test_serverless_mode_renders_what_knative_accepts_and_refuses_what_it_would_reject():
    """Both modes are explicit: the annotation says which, Serverless drops the pod securityContext (the
    container keeps every field Knative's SecurityContextMask allows, UID included), and a nodeSelector or
    tolerations Knative would reject fails the render naming the flag to enable."""
    objects, _ = render(_values("serverless-values.yaml"))
    isvc = by_kind(objects, "InferenceService")["duogen"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    predictor = isvc["spec"]["predictor"]
    assert "securityContext" not in predictor
    sc = predictor["model"]["securityContext"]
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["readOnlyRootFilesystem"]) == (True, 10001, True)
    raw, _ = render()
    assert (
        by_kind(raw, "InferenceService")["duogen"]["metadata"]["annotations"][
            "serving.kserve.io/deploymentMode"
        ]
        == "RawDeployment"
    )
    for field, flag in (("nodeSelector", "podspec-nodeselector"), ("tolerations", "podspec-tolerations")):
        gpu = _values("gpu-serving-values.yaml")["serving"]
        with pytest.raises(
            Exception, match=rf"serving.{field} with serving.deploymentMode=Serverless.*{flag}"
        ):
            render({"serving": {"deploymentMode": "Serverless", field: gpu[field]}})
    enabled, _ = render(_values("serverless-gpu-values.yaml"))
    predictor = by_kind(enabled, "InferenceService")["duogen"]["spec"]["predictor"]
    assert predictor["nodeSelector"] and predictor["tolerations"] and "securityContext" not in predictor


def test_kfp_namespace_models_standalone_and_multi_user():
    """Standalone KFP: pipeline pods in `kubeflow` as pipeline-runner, so the S3 Secret must exist there too
    (the chart copies its generated one, same keys and values); multi-user: everything in the profile
    namespace, which must be the release's. The bugs: a Secret only in the release namespace (steps could
    not start), or a multi-user release installed outside the profile namespace."""
    objects, notes = render(_values("kfp-standalone-values.yaml"))
    secrets = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "duogen-s3"]
    here, there = sorted(secrets, key=lambda o: o["metadata"].get("namespace", ""))
    assert "namespace" not in here["metadata"] and there["metadata"]["namespace"] == "kubeflow"
    assert here["stringData"] == there["stringData"]  # one set of credentials, drawn once per render
    assert "copy of Secret duogen-s3 into kubeflow" in notes

    external, notes = render(_values("external-s3-values.yaml"))
    assert "Secret" not in {o["kind"] for o in external}
    assert "CREATE Secret acme-s3-credentials in namespace kubeflow" in notes

    multi, notes = render(_values("kfp-multi-user-values.yaml"))
    assert [o.get("metadata", {}).get("namespace") for o in multi if o["kind"] == "Secret"] == [None]
    assert f"namespace {NS} as ServiceAccount default-editor" in notes
    with pytest.raises(Exception, match="install the release in that namespace"):
        render(_merged("kfp-multi-user-values.yaml") | {"pipeline": {"multiUser": True, "runner": {
            "namespace": "kubeflow-user", "serviceAccount": "default-editor"}}})  # fmt: skip


def test_the_upload_hook_ends_inside_helms_timeout_and_can_be_skipped():
    """helm waits 5 minutes (its default --timeout) for a hook Job; the old Job retried ~10 minutes without
    KFP and failed the release. Every hook Job is bounded below that, the upload says why it skipped."""
    objects, notes = render()
    for job in by_kind(objects, "Job").values():
        assert job["spec"]["activeDeadlineSeconds"] < 300, job["metadata"]["name"]
    upload = by_kind(objects, "Job")["duogen-pipeline-upload"]
    assert upload["spec"]["backoffLimit"] <= 1
    (container,) = upload["spec"]["template"]["spec"]["containers"]
    args = _parse_duogen(container["command"][1:] + container["args"])
    assert args.skip_if_unreachable and args.wait < upload["spec"]["activeDeadlineSeconds"] - 60
    assert "says so in its\n  log and succeeds" in notes or "succeeds, so the release installs" in notes
    skipped, notes = render({"pipeline": {"upload": False}})
    assert "duogen-pipeline-upload" not in by_kind(skipped, "Job")
    assert "not uploaded (pipeline.upload=false)" in notes and "duogen pipeline upload --host" in notes


def test_the_inferenceservice_serves_what_the_uploaded_pipeline_registers_and_promotes(tmp_path):
    """One registered-model name from values: the upload Job compiles the pipeline with defaults that
    register and promote `serving.registeredModel@serving.alias` and roll out this InferenceService (the
    bug: the chart served models:/duogen@champion while the pipeline registered duogen-toy and deployed a
    second InferenceService). The Job's own compile arguments are run here through the CLI."""
    from duogen.cli import main as duogen_main

    values = {"serving": {"registeredModel": "acme-pair", "alias": "prod", "deploymentMode": "Serverless",
                          "name": "pair"}}  # fmt: skip
    objects, _ = render(values)
    (container,) = by_kind(objects, "Job")["duogen-pipeline-upload"]["spec"]["template"]["spec"]["containers"]
    compile_args = [a for a in container["args"] if a.split("=")[0] in ("--profile", "--image", "--default")]
    out = tmp_path / "pipeline.yaml"
    assert duogen_main(["pipeline", "compile", "-o", str(out), *compile_args]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}

    isvc = by_kind(objects, "InferenceService")["pair"]
    model_arg = next(a for a in isvc["spec"]["predictor"]["model"]["args"] if a.startswith("--model="))
    assert model_arg == f"--model=models:/{defaults['model_name']}@{defaults['alias']}"
    assert (defaults["model_name"], defaults["alias"]) == ("acme-pair", "prod")
    env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert defaults["tracking_uri"] == env["MLFLOW_TRACKING_URI"]  # full DNS name: reachable from kubeflow
    assert defaults["s3_secret"] in by_kind(objects, "Secret")
    # the deploy step rolls out this very InferenceService (the one definition: the chart's)
    from duogen.platform.inferenceservice import ServingSettings

    settings = ServingSettings(**defaults["serving"])
    assert (settings.name, settings.namespace) == (isvc["metadata"]["name"], NS) == ("pair", NS)
    assert (
        defaults["cluster"]["namespace"] == NS and defaults["cluster"]["s3_secret"] == defaults["s3_secret"]
    )


def test_mlflow_migrates_its_database_before_the_server_starts(tmp_path):
    """An image bump must not crash-loop MLflow on an out-of-date schema: an init container runs the
    installed `mlflow db upgrade` on the server's own backend URI. Run here exactly as rendered (sqlite):
    it creates the tables of a new database and is a no-op on a current one."""
    for name in ("sqlite-values.yaml", "postgres-values.yaml", "external-postgres-values.yaml"):
        objects, _ = render(_values(name))
        pod = by_kind(objects, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]
        (init,), (server,) = pod["initContainers"], pod["containers"]
        assert init["command"] == ["mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
        backend = [e for e in server["env"] if e["name"] in ("PGPASSWORD", "MLFLOW_BACKEND_STORE_URI")]
        assert [e for e in init["env"] if e["name"] != "HOME"] == backend, name  # the server's database
        assert init["image"] == server["image"]  # the server's MLflow version migrates
    objects, _ = render(_values("sqlite-values.yaml"))
    (init,) = by_kind(objects, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["initContainers"]
    uri = next(e["value"] for e in init["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    uri = uri.replace("/var/lib/mlflow", str(tmp_path))
    argv = [a.replace("$(MLFLOW_BACKEND_STORE_URI)", uri) for a in init["command"]]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    for _ in range(2):  # first install, then a restart on a current schema
        done = subprocess.run([mlflow_bin, *argv[1:]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    import sqlite3

    tables = {r[0] for r in sqlite3.connect(tmp_path / "mlflow.db").execute("select name from sqlite_master")}
    assert {"experiments", "registered_models", "model_versions", "alembic_version"} <= tables


def test_mlflow_behind_an_ingress_accepts_its_host_and_origins_and_the_controller_may_reach_it(monkeypatch):
    """The MLflow UI behind an ingress must be able to set an alias: its host is an allowed host, its origin
    a CORS origin (as mlflow 3.17's server reads them: mlflow/server/security_utils.py), and the
    NetworkPolicy admits the ingress controller's pods (the bug: same-namespace only)."""
    from mlflow.server import security_utils

    objects, _ = render(_values("mlflow-ingress-values.yaml"))
    (ingress,) = by_kind(objects, "Ingress").values()
    assert ingress["spec"]["rules"][0]["host"] == "mlflow.acme.example"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "duogen-mlflow"
    (mlflow,) = by_kind(objects, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["containers"]
    for e in mlflow["env"]:
        if e["name"].startswith("MLFLOW_SERVER_"):
            monkeypatch.setenv(e["name"], e["value"])
    assert "mlflow.acme.example" in security_utils.get_allowed_hosts_from_env()
    origins = security_utils.get_allowed_origins_from_env()
    for origin in ("https://mlflow.acme.example", "https://notebooks.acme.example"):
        assert not security_utils.should_block_cors_request(origin, "POST", origins), origin
    assert security_utils.should_block_cors_request("https://evil.example", "POST", origins)
    policy = by_kind(objects, "NetworkPolicy")["duogen-mlflow"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    } in _peers(policy)
    with pytest.raises(Exception, match="networkPolicy.ingressController.namespace"):
        render({"mlflow": {"ingress": {"enabled": True, "host": "mlflow.acme.example"}}})


def test_gitops_renders_are_stable_and_name_every_missing_secret():
    """`helm template` / Argo CD cannot `lookup`, so generated credentials change on every sync. With
    secrets.generate=false nothing is generated: every credential is an existing Secret, two renders are
    identical, and a missing one fails the render naming its value."""
    values = _values("gitops-values.yaml")
    first, _ = render(values)
    again, _ = render(values)
    assert first == again and "Secret" not in {o["kind"] for o in first}
    assert _secret_refs(first) == {
        "duogen-s3-external", "duogen-postgres-external", "duogen-serving-token-external"}  # fmt: skip
    for missing in ("s3.existingSecret", "mlflow.postgres.existingSecret", "serving.auth.existingSecret"):
        broken = yaml.safe_load(yaml.safe_dump(values))
        section = broken
        *path, leaf = missing.split(".")
        for key in path:
            section = section[key]
        section[leaf] = ""
        with pytest.raises(Exception, match=rf"secrets.generate is false.*set {re.escape(missing)}"):
            render(broken)
