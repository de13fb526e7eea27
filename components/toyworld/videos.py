"""Short H.264 videos of toy-world tasks with hard cuts between steps, plus exact ground truth.

Each step of a random task is one segment: a short hold on the scene before, the change animated (a move or
swap slides, a recolour or resize blends, an add or remove fades), then a hold on the scene after. Every
segment is shot with its own "camera": a background tint that changes sharply at each cut, so a content-based
scene detector (PySceneDetect) finds the boundaries while the checker still reads the shapes (tints stay
nearest to the white background). Frames are the 64x64 canvas upscaled by an integer factor (default 2).
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
from pathlib import Path

import numpy as np

from duogen.components.toyworld.render import render
from duogen.components.toyworld.serialize import action_to_json, scene_to_json, task_to_json
from duogen.components.toyworld.world import Action, Move, Scene, Swap, WorldConfig, random_task

# Segment backgrounds alternate between two families so every cut changes hue and saturation a lot
# (PySceneDetect's ContentDetector scores the mean HSV change): neutral whites/greys (hue 0, saturation 0)
# and saturated light blues/cyans/lavenders (hue 90..130, saturation ~80). All stay nearest to the white
# background among the palette colours, so find_shapes still reads only the shapes.
NEUTRAL_TINTS = ((255, 255, 255), (238, 238, 238), (225, 225, 225))
COOL_TINTS = ((175, 215, 255), (170, 255, 255), (200, 180, 255), (180, 235, 255))


def _tints(rng: random.Random, n: int) -> list[tuple[int, int, int]]:
    first = rng.randrange(2)
    return [rng.choice((NEUTRAL_TINTS, COOL_TINTS)[(first + k) % 2]) for k in range(n)]


def _tinted(scene: Scene, cfg: WorldConfig, tint: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(render(scene, dataclasses.replace(cfg, background=tint)), dtype=np.float32)


def _segment_frames(
    action: Action, before: Scene, after: Scene, cfg: WorldConfig, tint: tuple[int, int, int], n: int
) -> list[np.ndarray]:
    """n canvas-size float frames: hold before, animate, hold after."""
    start = max(1, round(n * 0.25))
    length = max(2, round(n * 0.4))
    a, b = _tinted(before, cfg, tint), _tinted(after, cfg, tint)
    frames = []
    for f in range(n):
        t = min(1.0, max(0.0, (f - start) / length))
        if t <= 0.0:
            frames.append(a)
        elif t >= 1.0:
            frames.append(b)
        elif isinstance(action, Move | Swap):
            # Slide: the touched shapes at interpolated centres (rendering does not validate overlaps).
            shapes = [
                dataclasses.replace(s, x=round(s.x + t * (e.x - s.x)), y=round(s.y + t * (e.y - s.y)))
                for s, e in zip(before.shapes, after.shapes, strict=True)
            ]
            frames.append(_tinted(Scene(tuple(shapes), before.width, before.height), cfg, tint))
        else:
            # Recolour / resize: a short blend; add / remove: a fade.
            frames.append((1.0 - t) * a + t * b)
    return frames


def _encode(frames: list[np.ndarray], fps: int, scale: int) -> bytes:
    import av  # PyAV (libx264); optional dependency, only needed to write videos

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        h, w = frames[0].shape[:2]
        stream.width, stream.height = w * scale, h * scale
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "g": str(4 * fps)}
        for arr in frames:
            img = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
            img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _make_video(video_id: str, rng: random.Random, cfg: WorldConfig, fps: int, spans, steps, scale: int):
    task = random_task(rng, cfg, steps=rng.randint(*steps))
    instructions = task.instructions(cfg)
    tints = _tints(rng, len(task.actions))
    frames: list[np.ndarray] = []
    segments = []
    for k, (action, text) in enumerate(zip(task.actions, instructions, strict=True)):
        n = max(8, round(rng.uniform(*spans) * fps))
        start = len(frames)
        frames += _segment_frames(action, task.scenes[k], task.scenes[k + 1], cfg, tints[k], n)
        segments.append(
            {
                "start_s": start / fps,
                "end_s": len(frames) / fps,
                "start_frame": start,
                "end_frame": len(frames),
                "instruction": text,
                "action": action_to_json(action),
                "scene_before": scene_to_json(task.scenes[k]),
                "scene_after": scene_to_json(task.scenes[k + 1]),
                "background": list(tints[k]),
            }
        )
    truth = {
        "video_id": video_id,
        "fps": fps,
        "width": cfg.width * scale,
        "height": cfg.height * scale,
        "n_frames": len(frames),
        "cut_frames": [s["start_frame"] for s in segments[1:]],
        "segments": segments,
        "task": task_to_json(task),
    }
    return _encode(frames, fps, scale), truth


def make_videos(
    out_dir: str | Path,
    n_videos: int,
    seed: int = 0,
    cfg: WorldConfig | None = None,
    fps: int = 8,
    seconds_per_step: tuple[float, float] = (2.0, 4.0),
    corrupt_videos: int = 0,
    steps: tuple[int, int] = (2, 4),
    scale: int = 2,
) -> list[str]:
    """Write videos/<video_id>.mp4 and truth/<video_id>.json for n_videos tasks; return all ids, sorted.

    `corrupt_videos` extra ids get truncated mp4 files (no truth file), listed in
    truth/_corrupt_videos.json = {"video_ids": [...]}.
    """
    cfg = cfg or WorldConfig()
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    total = n_videos + corrupt_videos
    bad = set(random.Random(f"duogen-videos:{seed}").sample(range(total), corrupt_videos))
    ids, corrupt = [], []
    for k in range(total):
        video_id = f"video-{k:05d}"
        ids.append(video_id)
        rng = random.Random(f"duogen-video:{seed}:{video_id}")
        data, truth = _make_video(video_id, rng, cfg, fps, seconds_per_step, steps, scale)
        if k in bad:
            corrupt.append(video_id)
            data = data[: int(len(data) * rng.uniform(0.2, 0.6))]
        else:
            (out / "truth" / f"{video_id}.json").write_text(json.dumps(truth, indent=1) + "\n")
        (out / "videos" / f"{video_id}.mp4").write_bytes(data)
    (out / "truth" / "_corrupt_videos.json").write_text(json.dumps({"video_ids": corrupt}, indent=1) + "\n")
    return ids
