"""The Helm chart (helm/duogen), rendered as `helm template` would (tests/chart_render.py). Every rendered
object is validated against the real schemas (tests/k8s_checks.py) and the security policy, with the default
values and with each values file under helm/duogen/ci/; values, credentials, commands, images and MLflow
backends. tests/test_helm_chart_cluster.py: what the chart does with the cluster's controllers."""

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
from chart_render import (  # noqa: E402
    CHART,
    CONFIGS,
    NS,
    ROOT,
    _merged,
    _parse_duogen,
    _secret_refs,
    _values,
    by_kind,
    render,
)
from k8s_checks import (  # noqa: E402
    knative_violations,
    policy_violations,
    validate,
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name if p else "default")
def test_strict_lint_passes(path):
    report = helm.lint(CHART, _values(path), strict=True, namespace=NS)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # strict: warnings count as errors


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name if p else "default")
def test_every_object_validates_and_every_container_meets_the_policy(path):
    """...and in Serverless mode, what KServe hands Knative passes Knative's webhook rules under the
    feature flags the values say the cluster enables (default flags otherwise)."""
    values = _values(path)
    objects, _ = render(values)
    for obj in objects:
        validate(obj)
    assert policy_violations(objects) == []
    serving = values.get("serving", {})
    if serving.get("deploymentMode") == "Serverless":
        assert knative_violations(objects, tuple(serving.get("knativeFeatures", []))) == []
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
        ({"s3": {"provider": "external"}}, "/s3/endpoint"),  # external S3 needs its endpoint and Secret
        ({"serving": {"deploymentMode": "Knative"}}, "/serving/deploymentMode"),  # KServe 0.15 knows two
        ({"pipeline": {"waitSeconds": 600}}, "/pipeline/waitSeconds"),  # must end inside helm's timeout
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


def test_containers_run_commands_that_exist_with_flags_their_programs_accept():
    objects, _ = render(_merged("auth-values.yaml", "kfp-multi-user-values.yaml"))
    job = by_kind(objects, "Job")["duogen-pipeline-upload"]
    pod = job["spec"]["template"]["spec"]
    (upload,) = pod["containers"]
    assert upload["command"][0] == "duogen"
    args = _parse_duogen(upload["command"][1:] + upload["args"])
    assert args.func.__name__ == "cmd_upload" and args.host.startswith("http://ml-pipeline.kubeflow")
    assert args.namespace == NS  # multi-user: upload into the profile namespace with the projected token
    assert pod["serviceAccountName"] == "default-editor"  # ...as the profile's editor, not `default`
    (token,) = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"

    from duogen.components.serving.arguments import add_arguments

    runtime = by_kind(objects, "ServingRuntime")["duogen"]
    (container,) = runtime["spec"]["containers"]
    assert container["command"] == ["duogen", "serve"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    isvc = by_kind(objects, "InferenceService")["duogen"]
    argv = [
        a.replace("{{.Name}}", "duogen")
        for a in container["args"] + isvc["spec"]["predictor"]["model"]["args"]
    ]
    served = parser.parse_args(argv)  # KServe appends the InferenceService's args to the runtime's
    assert (served.model, served.host, served.port) == ("models:/duogen@champion", "0.0.0.0", 8080)
    assert served.reload_interval == 60
    # stored Responses in the release's bucket: every replica continues every other's conversations
    assert (served.response_store, served.response_ttl) == ("s3://duogen/responses", 24)
    assert container["ports"][0]["containerPort"] == served.port
    # ready once the model is loaded, alive as soon as the server answers (a slow load is not a restart)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    live = container["livenessProbe"]
    assert (
        live["httpGet"]["path"] == "/v2/health/live"
        and live["failureThreshold"] * live["periodSeconds"] >= 300
    )
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
    (upgrade,) = by_kind(objects, "Deployment")["duogen-mlflow"]["spec"]["template"]["spec"]["initContainers"]
    assert upgrade["command"][:3] == ["mlflow", "db", "upgrade"]
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
    assert not any(a.startswith("--model") for a in predictor["model"]["args"])  # the runtime's /mnt/models
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
