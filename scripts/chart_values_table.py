"""Write the values table of helm/duogen/README.md from the `# --` comments in values.yaml (helm-docs'
convention; helm-docs itself is a Go binary this machine cannot install).

    python scripts/chart_values_table.py          # rewrite the table between the README's markers
    python scripts/chart_values_table.py --check  # exit 1 when the README's table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "duogen"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")


def documented_values(text: str) -> list[tuple[str, str, str]]:
    """(dotted key, description, default as JSON) for every leaf value, in file order. A leaf without a
    `# --` comment gets an empty description (the tests reject that)."""
    rows, path, comment = [], [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = stripped[4:].strip()
            continue
        m = KEY.match(line)
        if not m:
            if stripped and not stripped.startswith("#"):
                comment = ""
            continue
        depth = len(m["indent"]) // 2
        path = path[:depth] + [m["key"]]
        rest = m["rest"].split(" #", 1)[0].strip()
        if rest:  # a leaf: `key: value`
            default = yaml.safe_load(rest)
            rows.append((".".join(path), comment, json.dumps(default)))
        comment = ""
    return rows


def table(rows) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, description, default in rows:
        kind = type(json.loads(default)).__name__
        kind = {"str": "string", "bool": "bool", "int": "int", "list": "list", "dict": "object"}.get(
            kind, kind
        )
        text = description.replace("|", r"\|")
        lines.append(f"| {key} | {kind} | `{default}` | {text} |")
    return "\n".join(lines)


def render_readme(readme: str, values: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table(documented_values(values))}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that the README's table is current")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    new = render_readme(readme, (CHART / "values.yaml").read_text())
    if args.check:
        if new != readme:
            print(f"{readme_path} is stale: run python scripts/chart_values_table.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
