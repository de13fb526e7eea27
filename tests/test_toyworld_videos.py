"""Toy-world videos: deterministic H.264 whose planted cuts PySceneDetect finds and whose truth replays."""

import json

import av
import pytest

from duogen.components.toyworld import (
    apply,
    caption_transition,
    make_videos,
    scene_from_json,
    task_from_json,
)
from duogen.components.toyworld.serialize import action_from_json

N_VIDEOS, N_CORRUPT = 24, 2


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    ids = make_videos(out, N_VIDEOS, seed=1, corrupt_videos=N_CORRUPT)
    truths = {p.stem: json.loads(p.read_text()) for p in sorted((out / "truth").glob("video-*.json"))}
    return out, ids, truths


def _frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)]


def test_same_seed_gives_byte_identical_videos(tmp_path):
    make_videos(tmp_path / "a", 3, seed=4, corrupt_videos=1)
    make_videos(tmp_path / "b", 3, seed=4, corrupt_videos=1)
    for p in sorted((tmp_path / "a").rglob("*.*")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()


def test_truth_matches_decoded_videos_and_replays(videos):
    out, ids, truths = videos
    corrupt = json.loads((out / "truth" / "_corrupt_videos.json").read_text())["video_ids"]
    assert len(corrupt) == N_CORRUPT and len(truths) == N_VIDEOS
    assert set(ids) == set(truths) | set(corrupt)
    for vid, t in truths.items():
        frames = _frames(out / "videos" / f"{vid}.mp4")
        assert len(frames) == t["n_frames"] == t["segments"][-1]["end_frame"]
        assert frames[0].shape == (t["height"], t["width"], 3) == (128, 128, 3)
        task = task_from_json(t["task"])
        prev_end = 0.0
        for k, seg in enumerate(t["segments"]):
            assert seg["start_s"] == prev_end and 2.0 - 1 / t["fps"] <= seg["end_s"] - seg["start_s"] <= 4.0
            prev_end = seg["end_s"]
            before, after = scene_from_json(seg["scene_before"]), scene_from_json(seg["scene_after"])
            assert (before, after) == (task.scenes[k], task.scenes[k + 1])
            assert apply(before, action_from_json(seg["action"])) == after
        assert t["cut_frames"] == [s["start_frame"] for s in t["segments"][1:]]


def test_corrupt_videos_do_not_decode(videos):
    out, _, _ = videos
    for vid in json.loads((out / "truth" / "_corrupt_videos.json").read_text())["video_ids"]:
        with pytest.raises((av.error.FFmpegError, av.error.InvalidDataError, OSError)):
            _frames(out / "videos" / f"{vid}.mp4")


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_scenedetect_finds_the_planted_cuts(videos, detector):
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    out, _, truths = videos
    hits = total = spurious = 0
    for vid, t in truths.items():
        det = ContentDetector() if detector == "content" else AdaptiveDetector()
        found = [scene[0].frame_num for scene in detect(str(out / "videos" / f"{vid}.mp4"), det)[1:]]
        for cut in t["cut_frames"]:
            total += 1
            hits += any(abs(cut - f) <= 2 for f in found)
        spurious += sum(not any(abs(cut - f) <= 2 for cut in t["cut_frames"]) for f in found)
    assert total >= 30 and hits / total >= 0.95, (hits, total)
    assert spurious <= 0.05 * total


def test_oracle_captions_first_and_last_frame_of_each_segment(videos):
    out, _, truths = videos
    ok = total = 0
    for vid, t in truths.items():
        frames = _frames(out / "videos" / f"{vid}.mp4")
        for seg in t["segments"]:
            total += 1
            ok += (
                caption_transition(frames[seg["start_frame"]], frames[seg["end_frame"] - 1])
                == seg["instruction"]
            )
    assert ok / total >= 0.95
