"""Programmatic judge: read shapes back out of an image and score them against the ground-truth scene.

Works on any RGB image (clean renders, noisy pages, generated frames): pixels are snapped to the nearest
palette colour within a tolerance, connected components are labelled, and each component's kind comes from how
it fills its bounding box (square ~1.0, circle ~0.785, triangle ~0.5)
and its top-half mass (small for triangles).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PIL import Image

from duogen.components.toyworld.world import Scene, Shape, WorldConfig


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask as arrays of (row, col); scipy is not available here."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, pixels = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            pixels.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    queue.append((rr, cc))
        out.append(np.array(pixels))
    return out


def classify(pixels: np.ndarray) -> tuple[str, float]:
    """Kind of one component from its fill ratio and top-half mass; returns (kind, fill ratio)."""
    rows, cols = pixels[:, 0], pixels[:, 1]
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    fill = len(pixels) / float(h * w)
    top = np.count_nonzero(rows < rows.min() + h / 2) / len(pixels)
    if fill < 0.64 or top < 0.38:
        return "triangle", fill
    return ("square" if fill > 0.9 else "circle"), fill


def find_shapes(
    image: Image.Image | np.ndarray, cfg: WorldConfig | None = None, tol: float = 90.0, min_area: int = 20
) -> list[Shape]:
    """Every shape in the image, sorted top-to-bottom then left-to-right.

    tol is the largest RGB distance to a palette colour that still counts as that colour (blurred edges and
    noise fall outside it or are closer to the background); components under min_area pixels are dropped.
    """
    cfg = cfg or WorldConfig()
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    names = list(cfg.colours)
    palette = np.array([cfg.colours[n] for n in names] + [cfg.background], dtype=np.float32)
    dist = np.linalg.norm(arr[:, :, None, :] - palette[None, None], axis=-1)
    nearest = dist.argmin(-1)
    ok = dist.min(-1) < tol
    sizes = sorted(cfg.sizes.values())
    found = []
    for k, colour in enumerate(names):
        for pixels in _components((nearest == k) & ok):
            if len(pixels) < min_area:
                continue
            top, left = pixels.min(0)
            bottom, right = pixels.max(0) + 1
            w, h = right - left, bottom - top
            kind, _ = classify(pixels)
            size = min(sizes, key=lambda s: abs(s - max(w, h)))
            found.append(Shape(kind, colour, int(left + w // 2), int(top + h // 2), size))
    return sorted(found, key=lambda s: (s.y, s.x))


def _close(a: Shape, b: Shape, pos_tol: int) -> bool:
    return abs(a.x - b.x) <= pos_tol and abs(a.y - b.y) <= pos_tol


def compare(expected: Scene, found: list[Shape], pos_tol: int = 4) -> dict:
    """Match each expected shape to a found one (same colour first, then nearest) and score.

    Returns {"matches": [...], "score": recall of fully-correct shapes, "precision": fraction of found shapes
    that matched a correct expected one, "extra": unmatched found shapes}.
    """
    unused = list(found)
    matches = []
    for i, e in enumerate(expected.shapes):
        same = [f for f in unused if f.colour == e.colour] or unused
        best = min(same, key=lambda f: (f.kind != e.kind, (f.x - e.x) ** 2 + (f.y - e.y) ** 2), default=None)
        if best is not None:
            unused.remove(best)
        m = {
            "index": i,
            "expected": e,
            "found": best,
            "kind": best is not None and best.kind == e.kind,
            "colour": best is not None and best.colour == e.colour,
            "position": best is not None and _close(best, e, pos_tol),
            "size": best is not None and best.size == e.size,
        }
        m["ok"] = m["kind"] and m["colour"] and m["position"] and m["size"]
        matches.append(m)
    n_ok = sum(m["ok"] for m in matches)
    return {
        "matches": matches,
        "score": n_ok / len(expected.shapes) if expected.shapes else float(not found),
        "precision": n_ok / len(found) if found else float(not expected.shapes),
        "extra": unused,
    }


def scene_consistency(before: Scene, after_found: list[Shape], touched: set[int], pos_tol: int = 4) -> dict:
    """Shapes the action did not touch must keep kind, colour, size and place in the next image.

    Returns {"kept": {index: bool}, "score": fraction of untouched shapes kept (1.0 if there are none)}.
    """
    kept = {}
    for i, s in enumerate(before.shapes):
        if i in touched:
            continue
        kept[i] = any(
            f.kind == s.kind and f.colour == s.colour and f.size == s.size and _close(f, s, pos_tol)
            for f in after_found
        )
    return {"kept": kept, "score": sum(kept.values()) / len(kept) if kept else 1.0}
