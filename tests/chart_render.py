"""The chart rendered as `helm template` would (helm-python-sdk: Helm's own Go code over ctypes; no helm
binary, API server or cluster exists here), for the chart tests: values files, the rendered objects by kind,
the Secrets they reference, a container's `duogen` command parsed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helm_python as helm
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from k8s_checks import documents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "duogen"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CONFIGS = [None, *CI_VALUES]
NS = "ml-team"


def _values(path: Path | str | None) -> dict:
    if isinstance(path, str):
        path = CHART / "ci" / path
    return yaml.safe_load(path.read_text()) if path else {}


def _merged(*names: str) -> dict:
    out: dict = {}
    for name in names:
        for key, value in _values(name).items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def render(values: dict | None = None, release: str = "duogen") -> tuple[list[dict], str]:
    out = helm.Chart.load(CHART).render(values or {}, name=release, namespace=NS, is_install=True)
    notes = out.pop(f"{CHART.name}/templates/NOTES.txt", "")
    return [d for text in out.values() for d in documents(text)], notes


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


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


def _parse_duogen(argv: list[str]) -> argparse.Namespace:
    from duogen.cli import build_parser

    return build_parser().parse_args(argv)
