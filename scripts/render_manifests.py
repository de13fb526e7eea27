"""Write manifests/base/servingruntime.yaml from the chart: the predictor's ServingRuntime is defined once,
in helm/duogen/templates/serving.yaml, and the kustomize base carries a rendering of it (default values,
the chart's own labels left out), so `kubectl apply -k` and `helm install` run the same predictor.

    python scripts/render_manifests.py          # rewrite the file
    python scripts/render_manifests.py --check  # exit 1 when it differs from the chart (CI runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "manifests" / "base" / "servingruntime.yaml"
HEADER = (
    "# Generated from helm/duogen/templates/serving.yaml by scripts/render_manifests.py: do not edit\n"
    "# (change the chart and run the script; a test fails when this file and the chart differ). The\n"
    "# project's predictor, `duogen serve`: KServe V1/V2 and OpenAI routes, the chat page.\n"
)


def rendered() -> str:
    import helm_python as helm

    out = helm.Chart.load(ROOT / "helm" / "duogen").render({}, name="duogen", namespace="duogen")
    docs = [d for d in yaml.safe_load_all(out["duogen/templates/serving.yaml"]) if d]
    (runtime,) = [d for d in docs if d["kind"] == "ServingRuntime"]
    runtime["metadata"] = {"name": runtime["metadata"]["name"]}  # kustomize adds the project's labels
    return HEADER + yaml.safe_dump(runtime, sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = rendered()
    if args.check:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} differs from the chart: run scripts/render_manifests.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
