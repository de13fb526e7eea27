"""Scores the web stage's shards against the toy world's ground truth (the built-in correctness benchmark).

Output images are matched to the page's files by content hash (lineage.hashes), dropped ones by their src
(lineage.dropped). Exact duplicates share a hash with their original, so kept copies are credited to the
legitimate name first.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from .shards import read_shard

JUNK = ("ad", "qr", "icon", "tracking_pixel", "duplicate", "near_duplicate", "corrupt")
REASON_OF = {"qr": "qr_code", "icon": "icon", "ad": "advert", "tracking_pixel": "tracking_pixel"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 1.0


def evaluate(site: str | Path, shards_dir: str | Path) -> dict:
    site, shards_dir = Path(site), Path(shards_dir)
    samples = {}
    for shard in sorted(shards_dir.glob("shard-*.tar")):
        for sample, _ in read_shard(shard):
            samples[Path(sample.lineage.input).stem] = sample
    truths = sorted(p for p in (site / "truth").glob("page-*.json"))
    junk_total, junk_dropped = Counter(), Counter()
    flagged, flagged_right = Counter(), Counter()
    dropped_all = dropped_junk = pages_matched = steps_total = steps_right = 0
    misplaced_total = misplaced_right = 0
    for tpath in truths:
        truth = json.loads(tpath.read_text())
        sample = samples.get(truth["page_id"])
        images = truth["images"]
        name_of_src = {info["src"]: name for name, info in images.items()}
        for info in images.values():
            if info["role"] in JUNK:
                junk_total[info["role"]] += 1
        if sample is None:
            continue
        kept = Counter(sample.lineage.hashes[ref] for ref in sample.image_refs())
        folder = site / "img" / truth["page_id"]
        sha_of = {n: _sha(folder / n) for n, i in images.items() if i.get("local") and (folder / n).exists()}
        by_hash: dict[str, list[str]] = {}
        for name, _info in sorted(images.items(), key=lambda kv: kv[1]["role"] in JUNK):
            if name in sha_of:
                by_hash.setdefault(sha_of[name], []).append(name)
        kept_names = set()
        for h, n in kept.items():
            kept_names.update(by_hash.get(h, [])[:n])
        for src, reason in sample.lineage.dropped.items():
            role = images.get(name_of_src.get(src, ""), {}).get("role", "unknown")
            dropped_all += 1
            dropped_junk += role in JUNK
            flagged[reason] += 1
            flagged_right[reason] += REASON_OF.get(role) == reason
        for name, info in images.items():
            if info["role"] in JUNK and name not in kept_names:
                junk_dropped[info["role"]] += 1
        steps = _assistant_steps(sample)
        pages_matched += len(steps) == len(truth["steps"])
        for k, step in enumerate(truth["steps"]):
            steps_total += 1
            got = steps[k] if k < len(steps) else []
            right = [sample.lineage.hashes[r] for r in got] == [sha_of[step["image"]]]
            steps_right += right
            if k in truth.get("misplaced_steps", []):
                misplaced_total += 1
                misplaced_right += right
    qr = ("qr", "qr_code")
    return {
        "pages": len(truths),
        "pages_out": len(samples),
        "qr_recall": _ratio(junk_dropped["qr"], junk_total["qr"]),
        "qr_precision": _ratio(flagged_right[qr[1]], flagged[qr[1]]),
        "icon_recall": _ratio(junk_dropped["icon"], junk_total["icon"]),
        "ad_recall": _ratio(junk_dropped["ad"], junk_total["ad"]),
        "tracking_pixel_recall": _ratio(junk_dropped["tracking_pixel"], junk_total["tracking_pixel"]),
        "duplicate_recall": _ratio(
            junk_dropped["duplicate"] + junk_dropped["near_duplicate"],
            junk_total["duplicate"] + junk_total["near_duplicate"],
        ),
        "corrupt_image_recall": _ratio(junk_dropped["corrupt"], junk_total["corrupt"]),
        "filter_precision": _ratio(dropped_junk, dropped_all),
        "reorder_accuracy": _ratio(misplaced_right, misplaced_total),
        "step_image_accuracy": _ratio(steps_right, steps_total),
        "step_count_match": _ratio(pages_matched, len(truths)),
    }


def _assistant_steps(sample) -> list[list[str]]:
    """Image refs per assistant text part (a step is a text part and the images that follow it)."""
    steps: list[list[str]] = []
    for turn in sample.turns:
        if turn.role != "assistant":
            continue
        for part in turn.parts:
            if part.type == "text":
                steps.append([])
            elif part.type == "image" and steps:
                steps[-1].append(part.ref)
    return steps
