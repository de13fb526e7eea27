"""Noisy how-to web pages about toy-world tasks, with exact ground truth for every page and image.

Each page teaches one random task ("How to ..."): an intro question, the starting picture, then "Step k:"
instructions each followed by the picture after that step. Real-web noise is planted at random per page -
adverts, QR codes, icons, tracking pixels, exact and near duplicates, pictures placed before their step,
external links, corrupt images and leftover markup - and `truth/<page_id>.json` says what every image is, so a
data engine that cleans the pages can be scored exactly. Same seed -> byte-identical files.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from duogen.components.toyworld.render import render
from duogen.components.toyworld.serialize import task_to_json
from duogen.components.toyworld.world import (
    Add,
    Move,
    Recolour,
    Remove,
    Resize,
    Swap,
    WorldConfig,
    random_task,
)

ROLES = ("initial", "step", "ad", "qr", "icon", "tracking_pixel", "duplicate", "near_duplicate", "corrupt")
# Per-page noise kinds recorded in truth["noise"]; each is planted on roughly 30-60 % of pages.
NOISE_KINDS = (
    "ad",
    "qr",
    "icon",
    "tracking_pixel",
    "duplicate",
    "near_duplicate",
    "misplaced",
    "external_link",
    "corrupt_image",
    "nav",
    "footer",
    "nbsp",
    "edit",
    "subscribe",
    "inline_style",
    "cookie_banner",
    "comment",
)
CORRUPT_PAGE_KINDS = ("binary", "invalid_utf8", "empty", "no_text")
AD_DOMAIN = "https://ads.example-ads.com"
TRACK_DOMAIN = "https://track.example-analytics.com"
LINK_DOMAINS = (
    "https://www.shape-wiki.example.org",
    "https://blog.example-canvas.net",
    "https://example.com",
)

_VERBS = {Move: "move", Recolour: "recolour", Add: "add", Remove: "remove", Resize: "resize", Swap: "swap"}
_P = 0.45  # probability of each noise kind on a page


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _gif(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "GIF")
    return buf.getvalue()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class _Page:
    """Collects the image files and truth entries of one page while its HTML is assembled in order."""

    def __init__(self, page_id: str, rng: random.Random):
        self.page_id, self.rng = page_id, rng
        self.files: dict[str, bytes] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.noise = dict.fromkeys(NOISE_KINDS, 0)

    def _name(self, ext: str) -> str:
        while True:
            name = f"{self.rng.getrandbits(40):010x}.{ext}"
            if name not in self.files:
                return name

    def add(self, data: bytes, ext: str, role: str, step: int | None = None, **attrs: str) -> str:
        """Store a local image file; return its <img> tag."""
        name = self._name(ext)
        self.files[name] = data
        src = f"../img/{self.page_id}/{name}"
        self.images[name] = {"role": role, "step": step, "src": src, "local": True}
        return self.tag(src, **attrs)

    def external(self, url: str, role: str, **attrs: str) -> str:
        """An image referenced by an absolute URL that does not exist locally."""
        self.images[url] = {"role": role, "step": None, "src": url, "local": False}
        return self.tag(url, **attrs)

    @staticmethod
    def tag(src: str, **attrs: str) -> str:
        extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{v}"' for k, v in attrs.items())
        return f'<img src="{src}"{extra}>'


def _banner(rng: random.Random) -> Image.Image:
    w, h = rng.randint(120, 180), rng.randint(28, 44)
    bg = tuple(rng.randint(0, 255) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, w - 1, h - 1], outline=(0, 0, 0))
    d.rectangle([w - 40, 6, w - 8, h - 7], fill=tuple(255 - c for c in bg))
    d.text((6, h // 2 - 6), rng.choice(["SALE -50%", "BUY NOW", "Best deals!", "Free trial"]), fill=(0, 0, 0))
    return img


def _icon(rng: random.Random) -> Image.Image:
    s = rng.randint(16, 32)
    img = Image.new("RGB", (s, s), tuple(rng.randint(0, 200) for _ in range(3)))
    d = ImageDraw.Draw(img)
    m = s // 4
    glyph = rng.choice(["dot", "bar", "tri"])
    if glyph == "dot":
        d.ellipse([m, m, s - m, s - m], fill=(255, 255, 255))
    elif glyph == "bar":
        d.rectangle([m, s // 2 - 2, s - m, s // 2 + 2], fill=(255, 255, 255))
    else:
        d.polygon([(m, s - m), (s - m, s - m), (s // 2, m)], fill=(255, 255, 255))
    return img


def _qr(rng: random.Random) -> Image.Image:
    import qrcode  # optional dependency, only needed to write pages

    q = qrcode.QRCode(box_size=rng.randint(2, 4), border=rng.randint(2, 4))
    q.add_data(f"https://app.example-shapes.com/get?ref={rng.getrandbits(32):08x}")
    q.make(fit=True)
    return q.make_image(fill_color="black", back_color="white").get_image().convert("RGB")


def _tracking(rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        return _gif(Image.new("L", (1, 1), 255)), "gif"
    return _png(Image.new("RGBA", (1, 1), (0, 0, 0, 0))), "png"


def _corrupt_image(rng: random.Random, cfg: WorldConfig) -> tuple[bytes, str]:
    from duogen.components.toyworld.world import random_scene

    img = render(random_scene(rng, cfg), cfg)
    data, ext = (_png(img), "png") if rng.random() < 0.6 else (_jpeg(img, 85), "jpg")
    return data[: max(8, int(len(data) * rng.uniform(0.3, 0.7)))], ext


def _linkify(rng: random.Random, text: str, name: str | None) -> str:
    """Wrap a phrase of the instruction in an external link (its visible text is unchanged)."""
    url = f"{rng.choice(LINK_DOMAINS)}/wiki/{(name or 'shapes').replace(' ', '_')}"
    phrase = f"the {name}" if name and f"the {name}" in text else None
    if phrase is None:
        words = text.rstrip(".").split(" ")
        phrase = words[-1]
    head, _, tail = text.partition(phrase)
    return f'{head}<a href="{url}">{phrase}</a>{tail}'


def _make_page(page_id: str, rng: random.Random, cfg: WorldConfig, steps: tuple[int, int]) -> tuple:
    task = random_task(rng, cfg, steps=rng.randint(*steps))
    instructions = task.instructions(cfg)
    n = len(instructions)
    page = _Page(page_id, rng)
    on = {k: rng.random() < _P for k in NOISE_KINDS}

    verbs = []
    for a in task.actions:
        if _VERBS[type(a)] not in verbs:
            verbs.append(_VERBS[type(a)])
    verb_text = verbs[0] if len(verbs) == 1 else ", ".join(verbs[:-1]) + " and " + verbs[-1]
    title = f"How to {verb_text} shapes on your canvas" + rng.choice(["", f" in {n} steps", " (easy guide)"])
    question = "How do I " + ", then ".join(_lower_first(t.rstrip(".")) for t in instructions) + "?"

    nb = "&nbsp;" if on["nbsp"] else ""
    page.noise["nbsp"] = int(on["nbsp"])
    style = ' style="color:#333;font-family:Arial"' if on["inline_style"] else ""
    page.noise["inline_style"] = int(on["inline_style"])

    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{title} - ShapeHowTo | Best guides</title>',
        '<link rel="stylesheet" href="/static/site.css"></head>',
        f"<body{style}>",
    ]
    if on["cookie_banner"]:
        head.append(
            '<div id="cookie-banner" class="cookie">We use cookies to improve your experience. '
            '<button>Accept all</button> <a href="/privacy">Privacy policy</a></div>'
        )
        page.noise["cookie_banner"] = 1
    header = ['<header class="site-header">']
    icons: list[str] = []
    n_icons = rng.randint(1, 3) if on["icon"] else 0
    for _ in range(n_icons):
        attrs = rng.choice([{"class_": "icon"}, {"class_": "icon social", "alt": "icon"}, {}, {"alt": ""}])
        icons.append(page.add(_png(_icon(rng)), "png", "icon", **attrs))
    page.noise["icon"] = n_icons
    if icons and rng.random() < 0.5:
        header.append(icons.pop())  # site logo
    if on["nav"]:
        header.append(
            '<nav class="menu"><ul><li><a href="/">Home</a></li><li><a href="/guides">Guides</a></li>'
            '<li><a href="/shop">Shop</a></li><li><a href="/about">About us</a></li></ul></nav>'
        )
        page.noise["nav"] = 1
    header.append("</header>")
    if on["comment"]:
        header.append(f"<!-- generated by cms v{rng.randint(2, 9)}.{rng.randint(0, 9)}; tpl=howto -->")
        page.noise["comment"] = 1

    article = ["<main>", '<article class="howto">', f"<h1>{title}</h1>"]
    intro_para = f'<p class="intro">{question}{nb}</p>'
    article.append(intro_para)
    if on["subscribe"]:
        article.append('<p class="cta"><a href="/subscribe"><b>Click here to subscribe!</b></a></p>')
        page.noise["subscribe"] = 1
    initial_tag = page.add(
        _png(render(task.scenes[0], cfg)), "png", "initial", alt=rng.choice(["", "start", "my canvas"])
    )
    article.append(f"<p>{initial_tag}</p>" if rng.random() < 0.5 else initial_tag)

    # Which steps carry which planted noise.
    misplaced = sorted(k for k in range(n) if rng.random() < 0.5) if on["misplaced"] else []
    if on["misplaced"] and not misplaced:
        misplaced = [rng.randrange(n)]
    dup_step = rng.randrange(n) if on["duplicate"] else None
    near_step = rng.randrange(n) if on["near_duplicate"] else None
    link_steps = {k for k in range(n) if rng.random() < 0.6} if on["external_link"] else set()
    if on["external_link"] and not link_steps:
        link_steps = {rng.randrange(n)}

    units: list[list[str]] = []
    step_truth = []
    for k, (text, action) in enumerate(zip(instructions, task.actions, strict=True)):
        scene, after = task.scenes[k], task.scenes[k + 1]
        img = render(after, cfg)
        data = _png(img)
        step_attrs = rng.choice([{}, {"alt": ""}, {"alt": "screenshot"}, {"width": "64", "height": "64"}])
        step_tag = page.add(data, "png", "step", k, **step_attrs)
        step_name = list(page.images)[-1]
        step_truth.append({"text": text, "image": step_name})
        imgs = [rng.choice(["{}", "<p>{}</p>", "<figure>{}</figure>"]).format(step_tag)]
        if k == dup_step:
            imgs.append(page.add(data, "png", "duplicate", k, **step_attrs))
        if k == near_step:
            if rng.random() < 0.5:
                near = page.add(_jpeg(img, 70), "jpg", "near_duplicate", k)
            else:
                side = round(cfg.width * rng.choice([0.9, 0.92, 1.08, 1.1]))
                near = page.add(
                    _png(img.resize((side, side), Image.Resampling.BILINEAR)), "png", "near_duplicate", k
                )
            imgs.append(near)

        html_text = text
        if k in link_steps:
            touched = getattr(action, "index", getattr(action, "i", None))
            name = scene.shapes[touched].name if touched is not None else None
            html_text = _linkify(rng, text, name)
            page.noise["external_link"] += 1
        edit = ' <span class="mw-editsection">[edit]</span>' if on["edit"] else ""
        inline_icon = ""
        if on["icon"] and rng.random() < 0.25:  # a tiny unclassed icon inside the step text itself
            inline_icon = " " + page.add(_png(_icon(rng)), "png", "icon")
            page.noise["icon"] += 1
        form = rng.choice(["h3", "p", "div"])
        if form == "h3":
            text_html = f"<h3>Step {k + 1}: {html_text}{nb}{edit}</h3>{inline_icon}"
        elif form == "p":
            text_html = f"<p><b>Step {k + 1}:</b> {html_text}{nb}{edit}{inline_icon}</p>"
        else:
            text_html = (
                f'<div class="step"><span class="num">Step {k + 1}:</span> '
                f"{html_text}{nb}{edit}{inline_icon}</div>"
            )
        units.append(imgs + [text_html] if k in misplaced else [text_html] + imgs)
    page.noise["edit"] = int(on["edit"])
    page.noise["misplaced"] = len(misplaced)
    page.noise["duplicate"] = int(dup_step is not None)
    page.noise["near_duplicate"] = int(near_step is not None)

    # Noise blocks dropped between steps (never inside a step unit).
    extras: list[tuple[int, str]] = []
    if on["ad"]:
        for _ in range(rng.randint(1, 2)):
            cid = f"{rng.getrandbits(32):08x}"
            style_ = rng.randrange(3)
            banner = _banner(rng)
            if style_ == 0:
                tag = page.add(_png(banner), "png", "ad", width=str(banner.width), height=str(banner.height))
                block = f'<div class="ad sponsored"><span class="ad-label">Sponsored</span>{tag}</div>'
            elif style_ == 1:
                tag = page.add(_png(banner), "png", "ad")
                block = (
                    f'<div class="promo"><small>Advertisement</small><a href="{AD_DOMAIN}/click?cid={cid}" '
                    f'rel="nofollow sponsored">{tag}</a></div>'
                )
            else:
                tag = page.external(
                    f"{AD_DOMAIN}/banners/{cid}.png", "ad", width=str(banner.width), height=str(banner.height)
                )
                block = (
                    f'<div class="ad"><small>Advertisement</small><a href="{AD_DOMAIN}/click?cid={cid}">'
                    f"{tag}</a></div>"
                )
            extras.append((rng.randint(0, n), block))
            page.noise["ad"] += 1
    if on["qr"]:
        tag = page.add(_png(_qr(rng)), "png", "qr", **rng.choice([{}, {"alt": "QR code"}, {"alt": ""}]))
        block = rng.choice(
            [
                f'<div class="app-promo"><p>Get the ShapeHowTo app! Scan me:</p>{tag}</div>',
                f"<p>{tag}</p>",
                tag,
            ]
        )
        extras.append((rng.randint(0, n), block))
        page.noise["qr"] = 1
    if on["corrupt_image"]:
        data, ext = _corrupt_image(rng, cfg)
        tag = page.add(data, ext, "corrupt")
        extras.append(
            (rng.randint(1, n), rng.choice([f"<figure>{tag}<figcaption>Result</figcaption></figure>", tag]))
        )
        page.noise["corrupt_image"] = 1
    track_tags = []
    if on["tracking_pixel"]:
        for _ in range(rng.randint(1, 2)):
            attrs = rng.choice([{"width": "1", "height": "1", "alt": ""}, {"style": "display:none"}, {}])
            if rng.random() < 0.25:
                tag = page.external(
                    f"{TRACK_DOMAIN}/px.gif?u={rng.getrandbits(32):08x}", "tracking_pixel", **attrs
                )
            else:
                data, ext = _tracking(rng)
                tag = page.add(data, ext, "tracking_pixel", **attrs)
            page.noise["tracking_pixel"] += 1
            if rng.random() < 0.5:
                extras.append((rng.randint(0, n), tag))
            else:
                track_tags.append(tag)

    body = list(article)
    for k in range(n + 1):
        body += [block for pos, block in extras if pos == k]
        if k < n:
            body += units[k]
    if icons:
        share = " ".join(f'<a href="https://social.example.com/share?u={page_id}">{t}</a>' for t in icons)
        body.append(f'<div class="share-bar">Share: {share}</div>')
    body += ["</article>", "</main>"]
    if on["footer"]:
        body.append(
            '<footer><p>&copy; 2024 ShapeHowTo. All rights reserved.</p><a href="/terms">Terms</a> | '
            '<a href="/contact">Contact</a></footer>'
        )
        page.noise["footer"] = 1
    body += track_tags
    body += ["</body>", "</html>"]
    html = "\n".join(head + header + body) + "\n"

    truth = {
        "page_id": page_id,
        "title": title,
        "question": question,
        "initial_image": next(k for k, v in page.images.items() if v["role"] == "initial"),
        "steps": step_truth,
        "images": page.images,
        "misplaced_steps": misplaced,
        "noise": page.noise,
        "task": task_to_json(task),
    }
    return html.encode("utf-8"), page.files, truth


def _corrupt_page(rng: random.Random, kind: str) -> bytes:
    if kind == "binary":
        return b"\x00\x89PNG\x00" + rng.randbytes(rng.randint(200, 800))
    if kind == "invalid_utf8":
        junk = bytes(rng.choice(range(0x80, 0x100)) for _ in range(rng.randint(100, 400)))
        return b"<html><body><p>How to \xff\xfe" + junk + b"</p></body></html>"
    if kind == "empty":
        return b""
    return (
        b"<!DOCTYPE html>\n<html><head><title></title></head>"
        b'<body><div class="wrap"><div></div></div></body></html>\n'
    )


def make_site(
    out_dir: str | Path,
    n_pages: int,
    seed: int = 0,
    cfg: WorldConfig | None = None,
    corrupt_pages: int = 0,
    steps: tuple[int, int] = (2, 4),
) -> list[str]:
    """Write `n_pages` good pages plus `corrupt_pages` broken ones under out_dir; return all page ids, sorted.

    Layout: pages/<page_id>.html, img/<page_id>/<name>.{png,jpg,gif}, truth/<page_id>.json (good pages only)
    and truth/_corrupt_pages.json = {"page_ids": [...], "kinds": {page_id: kind}}.
    """
    cfg = cfg or WorldConfig()
    out = Path(out_dir)
    for sub in ("pages", "img", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    total = n_pages + corrupt_pages
    order = random.Random(f"duogen-site:{seed}")
    bad = set(order.sample(range(total), corrupt_pages))
    ids, corrupt = [], {}
    for k in range(total):
        page_id = f"page-{k:05d}"
        ids.append(page_id)
        rng = random.Random(f"duogen-page:{seed}:{page_id}")
        if k in bad:
            kind = CORRUPT_PAGE_KINDS[len(corrupt) % len(CORRUPT_PAGE_KINDS)]
            corrupt[page_id] = kind
            (out / "pages" / f"{page_id}.html").write_bytes(_corrupt_page(rng, kind))
            continue
        html, files, truth = _make_page(page_id, rng, cfg, steps)
        (out / "pages" / f"{page_id}.html").write_bytes(html)
        img_dir = out / "img" / page_id
        img_dir.mkdir(exist_ok=True)
        for name, data in files.items():
            (img_dir / name).write_bytes(data)
        (out / "truth" / f"{page_id}.json").write_text(json.dumps(truth, indent=1) + "\n")
    (out / "truth" / "_corrupt_pages.json").write_text(
        json.dumps({"page_ids": sorted(corrupt), "kinds": corrupt}, indent=1) + "\n"
    )
    return ids
