"""Draw a scene with exact flat colours (no anti-aliasing), so the checker can recover it pixel-exactly."""

from __future__ import annotations

from PIL import Image, ImageDraw

from duogen.components.toyworld.world import Scene, WorldConfig


def render(scene: Scene, cfg: WorldConfig | None = None) -> Image.Image:
    """RGB image on a white background; shapes fill their box [left, right) x [top, bottom)."""
    cfg = cfg or WorldConfig()
    image = Image.new("RGB", (scene.width, scene.height), cfg.background)
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        left, top, right, bottom = s.box()
        rgb = cfg.colours[s.colour]
        if s.kind == "square":
            draw.rectangle([left, top, right - 1, bottom - 1], fill=rgb)
        elif s.kind == "circle":
            draw.ellipse([left, top, right - 1, bottom - 1], fill=rgb)
        elif s.kind == "triangle":
            # Apex up, base along the bottom of the box: fills about half of the box.
            draw.polygon(
                [(left, bottom - 1), (right - 1, bottom - 1), ((left + right - 1) / 2, top)], fill=rgb
            )
        else:
            raise ValueError(f"cannot render unknown kind {s.kind!r}")
    return image
