"""Images that arrive with a request: data URLs, base64, uploaded bytes, or http(s) URLs on an allow-list.

Every path ends in `decode_image`, which refuses what would hurt the server before decoding it: more
bytes than `max_bytes`, more pixels than `max_pixels` (Pillow's decompression-bomb guard is made an error
and the declared size is checked before the pixels are read), formats other than PNG/JPEG/WebP/GIF/BMP,
and files that do not decode. Each refusal is a `DuoGenInputError` naming the problem (HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from duogen.model.errors import DuoGenInputError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


@dataclass
class ImageLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_images: int = 8  # per request
    url_allow_list: tuple[str, ...] = field(
        default=()
    )  # hosts (host or host:port) images may be fetched from
    url_timeout_s: float = 10.0


def decode_image(data: bytes, limits: ImageLimits, what: str = "image") -> Image.Image:
    if len(data) > limits.max_bytes:
        raise DuoGenInputError(f"{what} is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = image.size
            if w * h > limits.max_pixels:
                raise DuoGenInputError(
                    f"{what} is {w}x{h} pixels, more than the limit of {limits.max_pixels} pixels"
                )
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DuoGenInputError(f"{what} is not a supported image ({', '.join(FORMATS)}): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DuoGenInputError):
            raise
        raise DuoGenInputError(f"{what} is corrupt: {err}") from None
    return image


def decode_base64(text: str, limits: ImageLimits, what: str = "image") -> Image.Image:
    if len(text) > limits.max_bytes * 4 // 3 + 4:
        raise DuoGenInputError(f"{what} is more than the limit of {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DuoGenInputError(f"{what} is not valid base64") from None
    return decode_image(data, limits, what)


async def load_image_url(url: str, limits: ImageLimits, what: str = "image") -> Image.Image:
    """A `data:image/...;base64,` URL, or an http(s) URL whose host is on the allow-list."""
    if not isinstance(url, str) or not url:
        raise DuoGenInputError(f"{what}: expected an image URL")
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise DuoGenInputError(f"{what}: a data URL must look like data:image/png;base64,<data>")
        return decode_base64(payload, limits, what)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DuoGenInputError(f"{what}: unsupported URL scheme {parts.scheme!r}; use a data: or http(s) URL")
    if parts.netloc not in limits.url_allow_list and parts.hostname not in limits.url_allow_list:
        raise DuoGenInputError(f"{what}: host {parts.netloc!r} is not on this server's image URL allow-list")
    return decode_image(await _fetch(url, limits, what), limits, what)


async def _fetch(url: str, limits: ImageLimits, what: str) -> bytes:
    import httpx

    try:
        async with (
            httpx.AsyncClient(timeout=limits.url_timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise DuoGenInputError(f"{what}: fetching {url} answered HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limits.max_bytes:
                    raise DuoGenInputError(
                        f"{what}: {url} is more than the limit of {limits.max_bytes} bytes"
                    )
            return bytes(data)
    except httpx.HTTPError as err:
        raise DuoGenInputError(f"{what}: cannot fetch {url}: {type(err).__name__}") from None
