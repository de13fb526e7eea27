"""The main job end to end at the smallest size, as a user starts it: `duogen run`."""

import json
import subprocess
import sys
from pathlib import Path

DUOGEN = str(Path(sys.executable).parent / "duogen")


def test_duogen_run_goes_from_toy_world_to_an_answer_page(tmp_path):
    cmd = [
        DUOGEN,
        "run",
        "--out",
        str(tmp_path / "run"),
        "--pages",
        "6",
        "--videos",
        "2",
        "--stage1-steps",
        "3",
        "--stage2-steps",
        "3",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert all(summary["samples"][k] > 0 for k in ("web", "video", "synthetic"))
    assert (Path(summary["model"]) / "duogen_config.json").exists()
    page = Path(summary["page"]).read_text()
    assert "How do I" in page and "<img " in page  # the user's starting picture at least
    assert set(summary["seconds"]) == {"toyworld", "curation", "stage1", "stage2", "generate"}
    # a rerun resumes: shards are skipped and training continues from its checkpoints
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["seconds"]["curation"] < 30
