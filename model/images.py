"""Image checks shared by the MLLM's processor path and the VAE: one place says which images are valid."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from .errors import DuoGenInputError

# Modes with an unambiguous RGB rendering. Rejected, e.g.: "I;16"/"I"/"F" (high bit depth / float: no agreed
# scaling to 8 bit), "CMYK"/"LAB"/"YCbCr"/"HSV" (a correct RGB conversion needs colour management).
ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P")


def to_rgb(img: Any) -> Image.Image:
    """Validate and convert to RGB; transparent pixels are composited on white, as Qwen's processor does."""
    if not isinstance(img, Image.Image):
        raise DuoGenInputError(f"expected a PIL.Image.Image, got {type(img).__name__}")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DuoGenInputError(f"image is empty ({w}x{h} pixels)")
    if img.mode not in ACCEPTED_MODES:
        raise DuoGenInputError(
            f"unsupported image mode {img.mode!r}; accepted modes are {', '.join(ACCEPTED_MODES)} "
            "(convert the image to RGB yourself)"
        )
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def png_base64(image: Image.Image) -> str:
    """The image as base64 PNG text (JSON answers, data URLs)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def png_data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + png_base64(image)
