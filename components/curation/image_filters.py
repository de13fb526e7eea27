"""Image filters of the web stage, each returning a drop reason or None, plus near-duplicate detection.

Order matters and is the cheapest-first order `check_image` applies: markup cues (advert, boilerplate)
need no pixels; then decoding (corrupt / unsupported), size rules (tracking pixel, icon) and finally the
QR detector (OpenCV), the only costly one.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from .html_blocks import AD_CUE, ImageBlock

AD_LINK = re.compile(
    r"(^|\.)(ads?|adserver|doubleclick|adclick|track|banner)[.-]|/(ads?|adclick|banners?)/|utm_", re.I
)
ICON_CUE = re.compile(r"(?:^|[\s_-])(icon|logo|avatar|emoji|badge|favicon)(?:$|[\s_-])", re.I)
SUPPORTED_FORMATS = {"PNG", "JPEG", "GIF", "WEBP", "BMP"}
ICON_MAX_SIDE = 48
TRACKING_MAX_SIDE = 2


@dataclass
class DecodedImage:
    data: bytes
    image: Image.Image  # RGB
    src: str = ""  # where the page referenced it


def ad_reason(block: ImageBlock, page_host: str | None = None) -> str | None:
    """Advert by markup and link cues: ad-like classes/ids/alt text, or a link to an ad server."""
    if any(AD_CUE.search(c) for c in block.cues) or AD_CUE.search(block.alt or ""):
        return "advert"
    for url in (block.link, block.src):
        if not url:
            continue
        parsed = urlparse(url)
        external = parsed.netloc and parsed.netloc != (page_host or "")
        if external and AD_LINK.search(parsed.netloc + parsed.path + "?" + parsed.query):
            return "advert"
    return None


def decode(data: bytes) -> DecodedImage | str:
    """Decoded RGB image, or the drop reason ("corrupt_image" / "unsupported_image")."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            probe.verify()
        if fmt not in SUPPORTED_FORMATS:
            return "unsupported_image"
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "corrupt_image"
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        return "unsupported_image"
    return DecodedImage(data, image.convert("RGB"))


def size_reason(block: ImageBlock, image: Image.Image) -> str | None:
    w, h = image.size
    if min(w, h) <= TRACKING_MAX_SIDE or (block.width or 99) <= TRACKING_MAX_SIDE:
        return "tracking_pixel"
    if max(w, h) <= ICON_MAX_SIDE or any(ICON_CUE.search(c) for c in block.cues):
        return "icon"
    return None


_QR = None


def is_qr_code(image: Image.Image) -> bool:
    """OpenCV's QR detector must *decode* a payload: finder-pattern lookalikes (squares) do not count."""
    global _QR
    import cv2

    if _QR is None:
        _QR = cv2.QRCodeDetector()
    arr = np.asarray(image.convert("L"))
    # A QR code is a field of black and white modules: skip the detector on anything else (cheap check).
    if (arr < 80).mean() < 0.1 or (arr > 175).mean() < 0.1 or _saturation(image) > 0.25:
        return False
    if max(arr.shape) < 200:  # small codes decode far more reliably upscaled
        scale = max(1, 200 // max(arr.shape))
        arr = cv2.resize(arr, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    try:
        text, points, _ = _QR.detectAndDecode(arr)
    except cv2.error:
        return False
    return bool(text)


def _saturation(image: Image.Image) -> float:
    """Fraction of clearly coloured pixels (QR codes have none)."""
    rgb = np.asarray(image.resize((32, 32)), dtype=np.int16)
    return float(((rgb.max(-1) - rgb.min(-1)) > 60).mean())


def check_image(block: ImageBlock, data: bytes | None, page_host: str | None = None) -> DecodedImage | str:
    """The decoded image if it passes every filter, else the reason it is dropped."""
    if block.boilerplate:
        reason = ad_reason(block, page_host)
        return reason or "boilerplate"
    reason = ad_reason(block, page_host)
    if reason:
        return reason
    if data is None:
        return "unavailable"
    decoded = decode(data)
    if isinstance(decoded, str):
        return decoded
    reason = size_reason(block, decoded.image)
    if reason:
        return reason
    if is_qr_code(decoded.image):
        return "qr_code"
    decoded.src = block.src
    return decoded


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((16, 16), Image.BOX), dtype=np.int16)


def near_duplicate(
    a: Image.Image, b: Image.Image, hash_distance: int = 6, changed_fraction: float = 0.01
) -> bool:
    """Same picture up to re-encoding or resizing: perceptual hash close AND colours unchanged.

    The perceptual hash alone sees luminance only, so a shape recoloured between two steps (red -> purple
    has nearly the same grey level) would look identical; the colour thumbnail catches that.
    """
    import imagehash

    diff = np.abs(_thumb(a) - _thumb(b)).max(axis=-1)
    if float((diff > 40).mean()) > changed_fraction:  # cheap test first: most neighbours differ
        return False
    return imagehash.phash(a) - imagehash.phash(b) <= hash_distance
