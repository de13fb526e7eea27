"""Evaluation reports: Markdown and HTML with a metrics table and a plot, per-answer records, and the same
figures logged to MLflow (metrics for the promotion gate, the report folder as artifacts).

    out/report.md, out/report.html   the summary (mean and 95% bootstrap interval per metric) and each answer
    out/metrics.png                  the summary as a bar chart with its intervals
    out/records.jsonl                one line per judged answer
    out/answers/                     the answers' pictures, linked from the HTML page
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from PIL import Image

NAMES = {"t_com": "T-Com", "i_com": "I-Com", "it_co": "IT-Co", "i_co": "I-Co", "i_q": "I-Q"}


def _plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [summary[n]["mean"] for n in names]
    errors = [
        [m - summary[n]["ci95"][0] for n, m in zip(names, means, strict=True)],
        [summary[n]["ci95"][1] - m for n, m in zip(names, means, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.bar([NAMES.get(n, n) for n in names], means, yerr=errors, capsize=4, color="#4a6fa5")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% bootstrap interval)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: dict, out: str | Path, title: str) -> Path:
    """Write the report folder for `result` ({"summary", "records"}, records may hold `parts`)."""
    out = Path(out)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    summary, records = result["summary"], result["records"]
    _plot(summary, out / "metrics.png", title)
    lines, blocks = [], []
    with open(out / "records.jsonl", "w") as f:
        for i, r in enumerate(records):
            pictures = []
            for k, part in enumerate(p for p in r.get("parts", []) if isinstance(p, Image.Image)):
                name = f"answers/task{r.get('task', i):03d}_{k}.png"
                part.save(out / name)
                pictures.append(name)
            f.write(json.dumps({k: v for k, v in r.items() if k != "parts"} | {"pictures": pictures}) + "\n")
            blocks.append(_answer_html(r, pictures))
    lines.append(f"# {title}\n")
    lines.append(f"{len(records)} answers judged.\n")
    lines.append("| metric | mean | 95% interval | answers |\n|---|---|---|---|")
    for name, v in summary.items():
        interval = f"{v['ci95'][0]:.3f} – {v['ci95'][1]:.3f}"
        lines.append(f"| {NAMES.get(name, name)} | {v['mean']:.3f} | {interval} | {v.get('n', '')} |")
    lines.append("\n![metrics](metrics.png)\n")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    rows = "".join(
        f"<tr><td>{NAMES.get(n, n)}</td><td>{v['mean']:.3f}</td>"
        f"<td>{v['ci95'][0]:.3f} – {v['ci95'][1]:.3f}</td><td>{v.get('n', '')}</td></tr>"
        for n, v in summary.items()
    )
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:1em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
        ".answer{border-top:1px solid #ddd;padding:.5em 0}.answer img{image-rendering:pixelated;width:128px;"
        "margin:.2em;border:1px solid #ccc}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(records)} answers judged.</p>"
        f"<table><tr><th>metric</th><th>mean</th><th>95% interval</th><th>answers</th></tr>{rows}</table>"
        "<p><img src='metrics.png' alt='metrics'></p><h2>Answers</h2>" + "".join(blocks) + "</body></html>"
    )
    (out / "report.html").write_text(page)
    return out / "report.html"


def _answer_html(record: dict, pictures: list[str]) -> str:
    scores = ", ".join(f"{NAMES.get(k, k)} {record[k]:.2f}" for k in NAMES if record.get(k) is not None)
    if "correct" in record:
        scores = f"{record['category']}: {'correct' if record['correct'] else 'wrong'}"
    if "scores" in record:  # a VLM judge's record
        scores = (
            ", ".join(f"{k} {v:g}" for k, v in record["scores"].items()) + f" — {record.get('reply', '')}"
        )
    images = "".join(f"<img src='{html.escape(p)}' alt='picture {k + 1}'>" for k, p in enumerate(pictures))
    return (
        f"<div class='answer'><p><b>{html.escape(str(record.get('id', record.get('task'))))}</b>: "
        f"{html.escape(record.get('request', ''))}</p>"
        f"<p>{html.escape(record.get('answer', ''))}</p><div>{images}</div>"
        f"<p><small>{scores}</small></p></div>"
    )


def log_to_mlflow(
    result: dict,
    folder: str | Path,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: dict | None = None,
) -> str:
    """Metrics `<name>` (mean), `<name>_ci_low`, `<name>_ci_high`, and the report folder as artifacts."""
    from duogen.platform.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment, run_name, tags)
    metrics = {}
    for name, v in result["summary"].items():
        metrics |= {name: v["mean"], f"{name}_ci_low": v["ci95"][0], f"{name}_ci_high": v["ci95"][1]}
    tracker.metrics(metrics, step=0)
    tracker.artifacts(folder, "evaluation")
    tracker.close()
    return tracker.run_id
