"""Check, at image build time, that the GPU stack imports together: the NGC base image's torch (a CUDA
build), Transformer Engine, Apex and DALI, megatron-core from PyPI, and DuoGen's training and serving code
on top. A version mismatch between them (megatron-core against TE, a torch pin replacing NVIDIA's build)
shows up here, naming the package, instead of in a pod on a GPU node. Prints one JSON line of versions.

    python images/check_gpu_stack.py                       # the GPU image's build (images/gpu.Dockerfile)
    python images/check_gpu_stack.py --cpu                 # what a CPU machine can check (tests)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# (import name, distribution) of the stack, in the order they must import
STACK = [
    ("torch", "torch"),
    ("transformer_engine.pytorch", "transformer-engine"),
    ("apex", "apex"),
    ("nvidia.dali", "nvidia-dali"),
    ("megatron.core", "megatron-core"),
    ("duogen.components.training.parallelize", "duogen"),
    ("duogen.components.serving.predictor", "duogen"),
]
GPU_ONLY = {"transformer_engine.pytorch", "apex"}  # never on a CPU machine (ENVIRONMENT.md)


def check(cpu: bool = False) -> tuple[dict[str, str], list[str]]:
    """(versions of what imported, problems). On a CPU machine (`cpu`) the GPU-only packages are skipped
    and torch may be a CPU build; everything else must import there too."""
    versions: dict[str, str] = {}
    problems: list[str] = []
    for module, dist in STACK:
        if cpu and module in GPU_ONLY:
            continue
        try:
            imported = importlib.import_module(module)
        except (ImportError, RuntimeError, OSError) as err:  # TE raises RuntimeError when it cannot load
            problems.append(f"{module} ({dist}) does not import: {type(err).__name__}: {err}")
            continue
        versions[dist] = str(getattr(imported, "__version__", "") or _dist_version(dist))
    torch = sys.modules.get("torch")
    if torch is not None and not cpu and torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU build: the base image's CUDA torch was replaced")
    return versions, problems


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="skip Transformer Engine and Apex; accept a CPU torch")
    args = p.parse_args(argv)
    versions, problems = check(cpu=args.cpu)
    print(json.dumps({"versions": versions, "problems": problems}))
    for problem in problems:
        print(f"check_gpu_stack: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
