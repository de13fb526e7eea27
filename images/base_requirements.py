"""Print what pip must install on top of a base image that already carries some of DuoGen's dependencies:
the project's requirements (pyproject.toml, plus extras) and constraints (constraints.txt) without the
packages the base provides. The GPU image uses it on the NGC PyTorch image, whose CUDA torch, DALI,
Transformer Engine and Apex must stay as NVIDIA built them.

    python images/base_requirements.py requirements --provided torch nvidia-dali --extra server > req.txt
    python images/base_requirements.py constraints --provided torch nvidia-dali > constraints-base.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(line: str) -> str:
    m = NAME.match(line)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def provided_by_base(name: str, provided: list[str]) -> bool:
    """`torch` covers torch; `nvidia-` style prefixes (ending in '-') cover a family (nvidia-dali-cuda120)."""
    return any(name == p or (p.endswith("-") and name.startswith(p)) for p in provided)


def requirements(provided: list[str], extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [r for r in reqs if not provided_by_base(_name(r), provided)]


def constraints(provided: list[str]) -> list[str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [line for line in lines if _name(line) and not provided_by_base(_name(line), provided)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["requirements", "constraints"])
    p.add_argument(
        "--provided", nargs="*", default=[], help="package names (or 'prefix-') the base image has"
    )
    p.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to add")
    args = p.parse_args(argv)
    provided = [re.sub(r"[-_.]+", "-", x).lower() for x in args.provided]
    out = requirements(provided, args.extra) if args.what == "requirements" else constraints(provided)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
