"""The pieces the pipeline's steps stand on: curation split into parts that together make exactly the shards
of one run, and a step that runs once per pipeline run, against a local folder and a real S3 server
(SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import s3_server  # noqa: E402

from duogen.components.curation.fanout import CurationPlan, curate_part, parts  # noqa: E402
from duogen.components.curation.shards import read_shard  # noqa: E402
from duogen.platform import steps, storage  # noqa: E402


def _samples(folders: list[Path]) -> dict[str, list[str]]:
    out = {}
    for folder in folders:
        for shard in sorted(folder.glob("shard-*.tar")):
            out[shard.name] = sorted(s.id for s, _ in read_shard(shard))
    return out


def test_curation_parts_together_make_the_shards_of_one_run(tmp_path):
    plan = CurationPlan(str(tmp_path / "no-world"), synthetic_per_seed=2, per_shard=3)
    items = parts(plan, ["synthetic"], shards=3)
    assert [(i["part"], i["parts"]) for i in items] == [(0, 3), (1, 3), (2, 3)]
    for item in items:
        curate_part(plan, "synthetic", item["part"], item["parts"], tmp_path / f"part{item['part']}")
    curate_part(plan, "synthetic", 0, 1, tmp_path / "whole")
    split = _samples([tmp_path / f"part{k}" for k in range(3)])
    assert split == _samples([tmp_path / "whole"]) and len(split) >= 3
    assert all(len(list((tmp_path / f"part{k}").glob("shard-*.tar"))) >= 1 for k in range(3))
    with pytest.raises(ValueError, match="unknown curation source 'books'"):
        parts(plan, ["books"], shards=1)
    with pytest.raises(FileNotFoundError, match="no-world does not exist"):  # never an empty source
        parts(plan, ["web"], shards=1)


def test_a_step_runs_once_per_pipeline_run(tmp_path):
    calls = []

    def work(out: Path) -> dict:
        calls.append(out)
        (out / "result.txt").write_text("made")
        return {"n": len(calls)}

    root = str(tmp_path / "root")
    assert steps.once(root, "r1", "make", work) == {"n": 1}
    assert steps.once(root, "r1", "make", work) == {"n": 1}  # recorded: not run again
    assert steps.once(root, "r2", "make", work) == {"n": 2}  # another pipeline run
    assert (tmp_path / "root" / "r1" / "make" / "result.txt").read_text() == "made"
    assert steps.record(root, "r1", "make")["seconds"] >= 0


def test_on_s3_a_step_works_locally_then_publishes_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DUOGEN_SCRATCH", str(tmp_path / "scratch"))
    with s3_server(tmp_path / "s3") as s3:
        s3.create_bucket("runs")
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        root = "s3://runs/pipelines"
        failed = []

        def broken(out: Path) -> dict:
            failed.append(out)
            (out / "half.txt").write_text("x")
            raise RuntimeError("the pod was evicted")

        with pytest.raises(RuntimeError):
            steps.once(root, "r1", "train", broken)
        assert steps.record(root, "r1", "train") is None  # no record: a rerun does the work
        out = steps.once(
            root, "r1", "train", lambda out: (out / "model.bin").write_bytes(b"m") and {"ok": True}
        )
        assert out == {"ok": True}
        fs = s3.filesystem()
        assert fs.cat_file("runs/pipelines/r1/train/model.bin") == b"m"
        assert json.loads(fs.cat_file("runs/pipelines/r1/train/_step.json"))["outputs"] == {"ok": True}
        copy = steps.input_dir(storage.join(root, "r1", "train"))
        assert (copy / "model.bin").read_bytes() == b"m" and copy.is_relative_to(tmp_path / "scratch")
