"""The Helm chart (helm/duogen), rendered as `helm template` would (helm-python-sdk: Helm's own Go code over
ctypes; no helm binary, API server or cluster exists here). Every rendered object is validated against the
real schemas (tests/k8s_checks.py) and the security policy, with the default values and with each values file
under helm/duogen/ci/."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import helm_python as helm
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from k8s_checks import documents, policy_violations, validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "duogen"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CONFIGS = [None, *CI_VALUES]
NS = "ml-team"


def _values(path: Path | None) -> dict:
    return yaml.safe_load(path.read_text()) if path else {}


def render(values: dict | None = None, release: str = "duogen") -> tuple[list[dict], str]:
    out = helm.Chart.load(CHART).render(values or {}, name=release, namespace=NS, is_install=True)
    notes = out.pop(f"{CHART.name}/templates/NOTES.txt", "")
    return [d for text in out.values() for d in documents(text)], notes


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name if p else "default")
def test_strict_lint_passes(path):
    report = helm.lint(CHART, _values(path), strict=True, namespace=NS)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # strict: warnings count as errors


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name if p else "default")
def test_every_object_validates_and_every_container_meets_the_policy(path):
    objects, _ = render(_values(path))
    for obj in objects:
        validate(obj)
    assert policy_violations(objects) == []
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "Role", "RoleBinding", "NetworkPolicy", "Job"} <= kinds
    assert {"ServingRuntime", "InferenceService"} <= kinds  # CRD kinds, validated against the CRDs


def test_the_policy_check_catches_what_it_names():
    """The checks above would pass on anything if the checker were blind: feed it a bad object."""
    objects, _ = render()
    mlflow = by_kind(objects, "Deployment")["duogen-mlflow"]
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del container["resources"]["limits"]["memory"]
    container["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"})
    found = policy_violations([mlflow])
    assert len(found) == 3 and all("duogen-mlflow/mlflow" in f for f in found)
    with pytest.raises(Exception, match="unknownField|Additional properties"):
        validate({**mlflow, "spec": {**mlflow["spec"], "unknownField": 1}})


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"mlflow": {"backend": "mysql"}}, "/mlflow/backend"),
        ({"serving": {"gpus": "two"}}, "/serving/gpus"),
        ({"serving": {"replicas": 2}}, "/serving"),  # an unknown value is a typo, not ignored
        ({"minio": {"enabled": False}}, "/s3/endpoint"),  # external S3 needs its endpoint and Secret
        (
            {"serving": {"resources": {"limits": {"cpu": "four", "memory": "1Gi"}}}},
            "/serving/resources/limits/cpu",
        ),
        (
            {"mlflow": {"backend": "postgres", "postgres": {"bundled": False}}},
            "/mlflow/postgres/existingSecret",
        ),
    ],
)
def test_an_invalid_values_file_is_rejected_naming_the_value(values, named):
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert named in str(err.value)


def _leaf_paths(schema: dict, prefix: str = "") -> set[str]:
    props = schema.get("properties")
    if schema.get("type") != "object" or not props:
        return {prefix}
    return set().union(*(_leaf_paths(s, f"{prefix}.{k}".lstrip(".")) for k, s in props.items()))


def _value_paths(values: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in values.items():
        path = f"{prefix}.{key}".lstrip(".")
        out |= _value_paths(value, path) if isinstance(value, dict) and value else {path}
    return out


def test_every_value_is_typed_in_the_schema_documented_and_in_the_readme_table():
    sys.path.insert(0, str(ROOT / "scripts"))
    from chart_values_table import documented_values

    values_text = (CHART / "values.yaml").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load(values_text)
    assert _value_paths(values) == _leaf_paths(schema)
    rows = documented_values(values_text)
    assert {key for key, _, _ in rows} == _value_paths(values)
    assert [key for key, description, _ in rows if len(description) < 10] == []
    # the schema must accept the defaults as they are (a default it rejects would break `helm install`)
    helm.Chart.load(CHART).validate_schema(values)
    check = subprocess.run([sys.executable, ROOT / "scripts" / "chart_values_table.py", "--check"])
    assert check.returncode == 0, "helm/duogen/README.md's table is stale"


def _secret_refs(node) -> set[str]:
    """Names of every Secret the objects read (env valueFrom, envFrom, a ServiceAccount's secrets)."""
    if isinstance(node, list):
        return set().union(set(), *(_secret_refs(n) for n in node))
    if not isinstance(node, dict):
        return set()
    found = {node[k]["name"] for k in ("secretKeyRef", "secretRef") if k in node}
    if node.get("kind") == "ServiceAccount":
        found |= {s["name"] for s in node.get("secrets", [])}
    return found.union(*(_secret_refs(v) for v in node.values()))


def test_credentials_come_from_existing_secrets_or_are_generated_once():
    objects, _ = render()
    s3 = by_kind(objects, "Secret")["duogen-s3"]
    assert s3["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert (
        s3["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
        == f"duogen-minio.{NS}.svc.cluster.local:9000"
    )
    assert len(s3["stringData"]["AWS_SECRET_ACCESS_KEY"]) == 40
    again, _ = render()  # offline there is no live Secret to keep, so each render draws anew: generated
    assert (
        by_kind(again, "Secret")["duogen-s3"]["stringData"]["AWS_SECRET_ACCESS_KEY"]
        != s3["stringData"]["AWS_SECRET_ACCESS_KEY"]
    )
    template = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in template  # ...and in a cluster the live value is kept

    external, _ = render(_values(CHART / "ci" / "external-s3-values.yaml"))
    assert "Secret" not in {o["kind"] for o in external}  # nothing to generate: every credential is theirs
    assert _secret_refs(external) == {"acme-s3-credentials"}
    assert all("minio" not in o["metadata"]["name"] for o in external)
    values_text = (CHART / "values.yaml").read_text()
    assert not re.search(r"(?i)(password|token|secretkey|accesskey)\s*:\s*\S", values_text)


def _parse_duogen(argv: list[str]) -> argparse.Namespace:
    from duogen.cli import build_parser

    return build_parser().parse_args(argv)


def test_containers_run_commands_that_exist_with_flags_their_programs_accept():
    objects, _ = render(_values(CHART / "ci" / "auth-values.yaml"))
    job = by_kind(objects, "Job")["duogen-pipeline-upload"]
    pod = job["spec"]["template"]["spec"]
    (upload,) = pod["containers"]
    assert upload["command"][0] == "duogen"
    args = _parse_duogen(upload["command"][1:] + upload["args"])
    assert args.func.__name__ == "cmd_upload" and args.host.startswith("http://ml-pipeline.kubeflow")
    assert args.namespace == NS  # multi-user: upload into the profile namespace with the projected token
    (token,) = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"

    from duogen.components.serving.__main__ import main as serve_main  # noqa: F401 (the runtime's module)
    from duogen.components.serving.arguments import add_arguments

    runtime = by_kind(objects, "ServingRuntime")["duogen"]
    (container,) = runtime["spec"]["containers"]
    assert container["command"] == ["python", "-m", "duogen.components.serving"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    isvc = by_kind(objects, "InferenceService")["duogen"]
    argv = [
        a.replace("{{.Name}}", "duogen")
        for a in container["args"] + isvc["spec"]["predictor"]["model"]["args"]
    ]
    served = parser.parse_args(argv)  # KServe appends the InferenceService's args to the runtime's
    assert (served.model, served.host, served.port) == ("models:/duogen@champion", "0.0.0.0", 8080)
    assert container["ports"][0]["containerPort"] == served.port
    env = {e["name"]: e for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert env["DUOGEN_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "duogen-serving-auth",
        "key": "token",
    }
    assert env["MLFLOW_TRACKING_URI"]["value"] == f"http://duogen-mlflow.{NS}.svc.cluster.local:5000"

    from mlflow.cli import server as mlflow_server

    (mlflow,) = by_kind(objects, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["containers"]
    assert mlflow["command"] == ["mlflow", "server"]
    ctx = mlflow_server.make_context("server", list(mlflow["args"]))  # click rejects an unknown flag
    assert ctx.params["serve_artifacts"] and ctx.params["artifacts_destination"] == "s3://duogen/mlflow"
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert f"duogen-mlflow.{NS}.svc.cluster.local" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    with pytest.raises(click.UsageError):
        mlflow_server.make_context("server", ["--no-such-flag"])


def test_gpu_serving_uses_the_gpu_image_and_asks_for_gpus():
    objects, _ = render(_values(CHART / "ci" / "gpu-serving-values.yaml"))
    (container,) = by_kind(objects, "ServingRuntime")["duogen"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/duogen/duogen-gpu:0.1.0"
    assert "--device=cuda" in container["args"] and "--dtype=bfloat16" in container["args"]
    predictor = by_kind(objects, "InferenceService")["duogen"]["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["timeout"]) == (1, 4, 600)
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu, _ = render()
    (container,) = by_kind(cpu, "ServingRuntime")["duogen"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/duogen/duogen:0.1.0" and "--device=cpu" in container["args"]


def test_storage_uri_mode_lets_kserve_download_with_the_annotated_service_account():
    objects, _ = render(_values(CHART / "ci" / "external-s3-values.yaml"))
    predictor = by_kind(objects, "InferenceService")["duogen"]["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://acme-duogen/models/duogen-7b2b/v3"
    assert "args" not in predictor["model"]
    sa = by_kind(objects, "ServiceAccount")[predictor["serviceAccountName"]]
    assert sa["secrets"] == [{"name": "acme-s3-credentials"}]
    assert sa["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "s3.eu-central-1.amazonaws.com"
    assert sa["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "1"


def test_mlflow_backends():
    sqlite, _ = render(_values(CHART / "ci" / "sqlite-values.yaml"))
    (mlflow,) = by_kind(sqlite, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "sqlite:////var/lib/mlflow/mlflow.db"
    assert (
        by_kind(sqlite, "PersistentVolumeClaim")["duogen-mlflow-db"]["spec"]["storageClassName"] == "fast-ssd"
    )
    assert "mlflow.acme.example" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")

    bundled, _ = render(_values(CHART / "ci" / "postgres-values.yaml"))
    (mlflow,) = by_kind(bundled, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith(
        "postgresql://mlflow:$(PGPASSWORD)@duogen-mlflow-postgres:5432/"
    )
    assert "StatefulSet" in {o["kind"] for o in bundled} and "duogen-mlflow-db" not in by_kind(
        bundled, "PersistentVolumeClaim"
    )
    assert by_kind(bundled, "Secret")["duogen-mlflow-postgres"]["stringData"]["password"]

    external, _ = render(_values(CHART / "ci" / "external-postgres-values.yaml"))
    (mlflow,) = by_kind(external, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "acme-mlflow-db",
        "key": "uri",
    }
    assert "StatefulSet" not in {o["kind"] for o in external}


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
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": NS}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert "ClusterRole" not in {o["kind"] for o in objects}


def test_network_policies_admit_only_this_namespace_and_select_the_real_pods():
    objects, _ = render(_values(CHART / "ci" / "postgres-values.yaml"))
    policies = by_kind(objects, "NetworkPolicy")
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    for name in ("duogen-mlflow", "duogen-minio", "duogen-mlflow-postgres"):
        policy, workload = policies[name], workloads[name]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}  # no namespaceSelector, no ipBlock: this namespace only
    (peer,) = policies["duogen-mlflow-postgres"]["spec"]["ingress"][0]["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"


def test_what_the_pipeline_deploys_and_launches_fits_what_the_chart_installs():
    """The deploy step's InferenceService names the chart's runtime and S3 ServiceAccount, and the training
    pods' S3 Secret is the one the chart makes (release `duogen`)."""
    from duogen.platform.inferenceservice import ServingSettings, as_dict, build
    from duogen.platform.pytorchjob import ClusterSettings

    objects, notes = render()
    isvc = as_dict(build("duogen-toy", "s3://duogen/models/x", ServingSettings(namespace=NS)))
    validate(isvc)
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["runtime"] in by_kind(objects, "ServingRuntime")
    assert predictor["serviceAccountName"] in by_kind(objects, "ServiceAccount")
    assert ClusterSettings().s3_secret in by_kind(objects, "Secret")
    assert f'"service_account": "{predictor["serviceAccountName"]}"' in notes


def test_notes_check_prerequisites_and_say_how_to_reach_everything():
    _, notes = render(_values(CHART / "ci" / "auth-values.yaml"), release="prod")
    # offline, no CRD is installed: each prerequisite is reported missing with what to install
    for api in ("kubeflow.org/v1/PyTorchJob", "serving.kserve.io/v1beta1/InferenceService"):
        assert f"MISSING  {api}" in notes
    assert "Training Operator" in notes and "KServe" in notes
    assert f"kubectl -n {NS} port-forward svc/prod-duogen-mlflow 5000:5000" in notes
    assert "<URL>/ui/" in notes and "<URL>/openai/v1" in notes
    assert "get secret prod-duogen-serving-auth" in notes
