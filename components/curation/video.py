"""The video stage: videos -> two-image samples (first frame + what happens -> `<BOV>` + last frame).

Per video: scene detection (PySceneDetect's ContentDetector) -> fixed-length clips inside each scene
(`clip_seconds`, 5 s by default; a longer scene gives consecutive clips, a remainder shorter than
`min_clip_seconds` is dropped) -> the first and last frame of every clip, decoded in one streaming pass with
PyAV (only the needed frames are kept, PNG-encoded) -> a caption of the transition by the MLLM backend (the
toy world's oracle offline) -> clips whose caption says nothing changed are dropped. A video that cannot be
read (truncated mp4, ...) is counted and skipped, never fatal.

The clip's place in its video is kept in `lineage.input` as a media fragment, `path#t=start,end` (seconds,
end exclusive), which is what `evaluate_videos` scores against the toy world's ground truth.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from pathlib import Path

from duogen.platform.llm import Backend, Request

from .executor import Item, StageContext, WorkUnit
from .sample import Lineage, Part, Sample, Turn, sha256
from .shards import read_shard
from .web import backend_for

STAGE_VERSION = "video-1"
STATIC = {
    "",
    "nothing changes",
    "nothing changed",
    "no change",
    "no changes",
    "nothing happens",
    "nothing happened",
}
FRAGMENT = re.compile(r"^(?P<path>.*)#t=(?P<start>[0-9.]+),(?P<end>[0-9.]+)$")


class VideoReadError(Exception):
    """A video that cannot be opened or decoded."""


def detect_scenes(path: str) -> tuple[float, list[tuple[int, int]]]:
    """(fps, [(start_frame, end_frame_exclusive), ...]) covering the whole video, by ContentDetector."""
    from scenedetect import ContentDetector, detect

    try:
        scenes = detect(str(path), ContentDetector(), start_in_scene=True)
    except Exception as err:  # scenedetect raises VideoOpenFailure, OSError, ... for unreadable files
        raise VideoReadError(f"{type(err).__name__}: {err}") from err
    if not scenes:
        return 0.0, []
    fps = float(scenes[0][0].frame_rate)
    return fps, [(start.frame_num, end.frame_num) for start, end in scenes]


def split_scene(
    start: int, end: int, fps: float, clip_seconds: float, min_clip_seconds: float
) -> tuple[list[tuple[int, int]], int]:
    """Consecutive clips of at most `clip_seconds` in [start, end); returns (clips, number too short)."""
    length = max(1, math.floor(clip_seconds * fps + 1e-9))
    shortest = max(2, math.ceil(min_clip_seconds * fps - 1e-9))  # a clip needs two distinct frames
    clips, short = [], 0
    for s in range(start, end, length):
        e = min(s + length, end)
        if e - s < shortest:
            short += 1
        else:
            clips.append((s, e))
    return clips, short


def grab_frames(path: str, indices: set[int]) -> dict[int, bytes]:
    """PNG bytes of the frames at `indices` (decode order), one streaming decode; others are discarded."""
    import av

    wanted = sorted(indices)
    out: dict[int, bytes] = {}
    if not wanted:
        return out
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i in indices:
                    buf = io.BytesIO()
                    frame.to_image().save(buf, format="PNG")
                    out[i] = buf.getvalue()
                if i >= wanted[-1]:
                    break
    except Exception as err:  # av.error.FFmpegError (InvalidDataError, ...), OSError, IndexError (no stream)
        raise VideoReadError(f"{type(err).__name__}: {err}") from err
    return out


def _seconds(frame: int, fps: float) -> str:
    return f"{frame / fps:.3f}"


def is_static(caption: str) -> bool:
    """The captioner says nothing happened ("Nothing changes.", "No change.", or nothing at all)."""
    return " ".join(re.sub(r"[^\w\s]", " ", caption.lower()).split()) in STATIC


def process_video(path: str, backend: Backend, ctx: StageContext) -> list[Item]:
    clip_seconds = float(ctx.settings.get("clip_seconds", 5.0))
    min_clip_seconds = float(ctx.settings.get("min_clip_seconds", 1.0))
    try:
        fps, scenes = detect_scenes(path)
        if not scenes:
            ctx.count("videos_dropped:no_frames")
            return []
        clips: list[tuple[int, int]] = []
        too_short = 0
        for start, end in scenes:
            kept, short = split_scene(start, end, fps, clip_seconds, min_clip_seconds)
            clips += kept
            too_short += short
        frames = grab_frames(path, {f for s, e in clips for f in (s, e - 1)})
    except VideoReadError as err:
        ctx.count("videos_dropped:corrupt_video")
        ctx.count(f"corrupt:{str(err).split(':')[0]}")
        return []
    ctx.count("scenes", len(scenes))
    if too_short:
        ctx.count("clips_dropped:too_short", too_short)
    ctx.count("clips", len(clips))
    complete = [(s, e) for s, e in clips if s in frames and e - 1 in frames]
    if len(complete) < len(clips):
        ctx.count("clips_dropped:missing_frame", len(clips) - len(complete))
    captions = backend.run_many(
        [Request("caption_transition", images=(frames[s], frames[e - 1])) for s, e in complete]
    )
    items: list[Item] = []
    for (s, e), caption in zip(complete, captions, strict=True):
        caption = " ".join((caption or "").split())
        if is_static(caption):
            ctx.count("clips_dropped:static")
            continue
        where = f"{path}#t={_seconds(s, fps)},{_seconds(e, fps)}"
        files = {"img0.png": frames[s], "img1.png": frames[e - 1]}
        sample = Sample(
            id=f"video-{sha256(where.encode())[:16]}",
            turns=[
                Turn("user", [Part("image", ref="img0.png"), Part("text", text=caption)]),
                Turn("assistant", [Part("bov"), Part("image", ref="img1.png")]),
            ],
            source="video",
            lineage=Lineage(
                where,
                {"video": STAGE_VERSION, "backend": backend.name},
                {ref: sha256(data) for ref, data in files.items()},
            ),
        )
        items.append((sample, files))
    ctx.count("samples", len(items))
    return items


def video_stage(unit: WorkUnit, ctx: StageContext) -> list[Item]:
    """Executor stage: every input of the unit is a video file path -> two-image samples, one per clip."""
    backend = backend_for(ctx.settings.get("backend", "offline"))
    items: list[Item] = []
    for path in unit.inputs:
        ctx.count("videos_in")
        items += process_video(str(path), backend, ctx)
    return items


# --- scoring against the toy world's ground truth -------------------------------------------------------


def parse_fragment(where: str) -> tuple[str, float, float]:
    """`path#t=start,end` -> (path, start_s, end_s)."""
    m = FRAGMENT.match(where)
    if not m:
        raise ValueError(f"lineage input {where!r} has no #t=start,end fragment")
    return m["path"], float(m["start"]), float(m["end"])


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 1.0


def evaluate_videos(site_dir: str | Path, shards_dir: str | Path, tolerance: int = 2) -> dict:
    """Score the video stage's shards against `make_videos` truth.

    - cut_recall: planted cuts with a clip boundary (start or end of a kept clip) within `tolerance` frames;
    - caption_accuracy: among clips spanning a whole truth segment (both ends within `tolerance` frames),
      the fraction whose caption equals the segment's instruction (segment_coverage: the fraction of truth
      segments that got such a clip);
    - corrupt_skipped (from the run's `_report.json`, else corrupt videos without samples) vs corrupt_planted.
    """
    site, shards = Path(site_dir), Path(shards_dir)
    clips: dict[str, list[tuple[float, float, str]]] = {}
    for shard in sorted(shards.glob("shard-*.tar")):
        for sample, _ in read_shard(shard):
            path, start, end = parse_fragment(sample.lineage.input)
            caption = next(
                p.text for t in sample.turns if t.role == "user" for p in t.parts if p.type == "text"
            )
            clips.setdefault(Path(path).stem, []).append((start, end, caption))
    corrupt = json.loads((site / "truth" / "_corrupt_videos.json").read_text())["video_ids"]
    cuts = cuts_found = scored = right = segments = covered = 0
    wrong: Counter = Counter()
    for tpath in sorted((site / "truth").glob("video-*.json")):
        truth = json.loads(tpath.read_text())
        fps, n = truth["fps"], truth["n_frames"]
        frames = [(round(s * fps), round(e * fps), c) for s, e, c in clips.get(truth["video_id"], [])]
        bounds = {b for s, e, _ in frames for b in (s, e)} - {0, n}
        for cut in truth["cut_frames"]:
            cuts += 1
            cuts_found += any(abs(cut - b) <= tolerance for b in bounds)
        for seg in truth["segments"]:
            segments += 1
            whole = [
                c
                for s, e, c in frames
                if abs(s - seg["start_frame"]) <= tolerance and abs(e - seg["end_frame"]) <= tolerance
            ]
            covered += bool(whole)
            for c in whole:
                scored += 1
                if c == seg["instruction"]:
                    right += 1
                else:
                    wrong[seg["action"]["type"] if isinstance(seg["action"], dict) else "?"] += 1
    report_path = shards / "_report.json"
    if report_path.exists():
        skipped = json.loads(report_path.read_text())["counters"].get("videos_dropped:corrupt_video", 0)
    else:
        skipped = sum(1 for vid in corrupt if vid not in clips)
    return {
        "videos": len(list((site / "truth").glob("video-*.json"))),
        "clips": sum(len(v) for v in clips.values()),
        "cuts": cuts,
        "cut_recall": _ratio(cuts_found, cuts),
        "segments": segments,
        "segment_coverage": _ratio(covered, segments),
        "clips_scored": scored,
        "caption_accuracy": _ratio(right, scored),
        "caption_errors_by_action": dict(sorted(wrong.items())),
        "corrupt_planted": len(corrupt),
        "corrupt_skipped": skipped,
        "corrupt_with_samples": sum(1 for vid in corrupt if vid in clips),
    }
