"""Video stage: toy-world videos -> scenes -> clips -> first/last frame + transition caption -> samples."""

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from duogen.components.curation.executor import StageContext, WorkUnit, plan, run_stage
from duogen.components.curation.sample import Sample, sha256
from duogen.components.curation.shards import read_shard
from duogen.components.curation.video import (
    evaluate_videos,
    is_static,
    parse_fragment,
    split_scene,
    video_stage,
)
from duogen.components.toyworld import make_videos

N_VIDEOS, N_CORRUPT = 6, 2


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    make_videos(out, N_VIDEOS, seed=5, corrupt_videos=N_CORRUPT)
    paths = sorted(str(p) for p in (out / "videos").glob("*.mp4"))
    truths = {p.stem: json.loads(p.read_text()) for p in sorted((out / "truth").glob("video-*.json"))}
    return out, paths, truths


@pytest.fixture(scope="module")
def direct(site):
    _, paths, _ = site
    ctx = StageContext(0)
    items = video_stage(WorkUnit(0, paths), ctx)
    return items, ctx.counters


def _truth_segment(truths, where):
    path, start, end = parse_fragment(where)
    truth = truths[Path(path).stem]
    fps = truth["fps"]
    for seg in truth["segments"]:
        if (
            abs(round(start * fps) - seg["start_frame"]) <= 2
            and abs(round(end * fps) - seg["end_frame"]) <= 2
        ):
            return seg
    return None


def test_counters_and_corrupt_videos_skipped(site, direct):
    _, paths, truths = site
    items, counters = direct
    assert counters["videos_in"] == N_VIDEOS + N_CORRUPT
    assert counters["videos_dropped:corrupt_video"] == N_CORRUPT
    n_segments = sum(len(t["segments"]) for t in truths.values())
    assert counters["scenes"] == n_segments  # every planted cut found, nothing extra
    assert counters["samples"] == len(items) > 0
    assert counters["clips"] == counters["samples"] + counters["clips_dropped:static"]


def test_samples_are_valid_two_image_pairs(site, direct):
    _, _, truths = site
    items, _ = direct
    ids = [s.id for s, _ in items]
    assert len(set(ids)) == len(ids)
    for sample, images in items:
        again = Sample.from_dict(json.loads(json.dumps(sample.to_dict())))
        assert again == sample and sample.source == "video"
        user, assistant = sample.turns
        assert user.role == "user" and [p.type for p in user.parts] == ["image", "text"]
        assert assistant.role == "assistant" and [p.type for p in assistant.parts] == ["bov", "image"]
        assert user.parts[1].text and not is_static(user.parts[1].text)
        first, last = user.parts[0].ref, assistant.parts[1].ref
        assert set(images) == {first, last} and first != last
        for ref, data in images.items():
            assert Image.open(io.BytesIO(data)).size == (128, 128)
            assert sample.lineage.hashes[ref] == sha256(data)
        path, start, end = parse_fragment(sample.lineage.input)
        assert Path(path).stem in truths and 0 <= start < end
        assert sample.lineage.stages["video"] == "video-1" and sample.lineage.stages["backend"] == "offline"


def test_captions_match_truth_instructions(site, direct):
    _, _, truths = site
    items, _ = direct
    scored = right = 0
    for sample, _ in items:
        seg = _truth_segment(truths, sample.lineage.input)
        if seg is not None:
            scored += 1
            right += sample.turns[0].parts[1].text == seg["instruction"]
    assert scored >= 0.9 * sum(len(t["segments"]) for t in truths.values())
    assert right >= 0.9 * scored


def test_executor_two_processes_and_evaluation(site, direct, tmp_path):
    out, paths, _ = site
    items, counters = direct
    report = run_stage(video_stage, plan(paths, 2), tmp_path / "shards", processes=2, progress=False)
    assert report.counters == dict(sorted(counters.items()))
    written = [s for shard in sorted((tmp_path / "shards").glob("shard-*.tar")) for s, _ in read_shard(shard)]
    assert sorted(s.id for s in written) == sorted(s.id for s, _ in items)  # deterministic ids
    scores = evaluate_videos(out, tmp_path / "shards")
    assert scores["cut_recall"] >= 0.98
    assert scores["caption_accuracy"] >= 0.9 and scores["segment_coverage"] >= 0.9
    assert scores["corrupt_skipped"] == scores["corrupt_planted"] == N_CORRUPT
    assert scores["corrupt_with_samples"] == 0


def test_long_scenes_split_into_fixed_length_clips(site, direct):
    _, paths, truths = site
    vid = next(v for v, t in truths.items() if max(s["end_s"] - s["start_s"] for s in t["segments"]) >= 3.0)
    path = next(p for p in paths if Path(p).stem == vid)
    default = StageContext(0)
    video_stage(WorkUnit(0, [path]), default)
    short = StageContext(0, {"clip_seconds": 1.5})
    items = video_stage(WorkUnit(0, [path]), short)
    assert short.counters["scenes"] == default.counters["scenes"]
    assert short.counters["clips"] > default.counters["clips"]
    assert items
    for sample, _ in items:
        _, start, end = parse_fragment(sample.lineage.input)
        assert end - start <= 1.5 + 1e-6
        assert end - start >= 1.0 - 1e-6  # min_clip_seconds


def test_split_scene_arithmetic():
    assert split_scene(0, 30, 8.0, 1.5, 1.0) == ([(0, 12), (12, 24)], 1)  # remainder 6 frames < 1 s
    assert split_scene(10, 50, 8.0, 5.0, 1.0) == ([(10, 50)], 0)
    assert split_scene(0, 48, 8.0, 5.0, 1.0) == ([(0, 40), (40, 48)], 0)
    assert split_scene(0, 5, 8.0, 5.0, 1.0) == ([], 1)


def test_unreadable_inputs_are_counted_not_fatal(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    ctx = StageContext(0)
    assert video_stage(WorkUnit(0, [str(junk), str(empty), str(tmp_path / "missing.mp4")]), ctx) == []
    assert ctx.counters["videos_dropped:corrupt_video"] == 3
    assert Counter(k for k in ctx.counters if k.startswith("corrupt:"))


def test_static_captions():
    assert is_static("Nothing changes.") and is_static("") and is_static("  no change ")
    assert not is_static("Move the red circle to the right.")
