"""HTML -> the page's main content as an ordered list of Markdown text blocks and image blocks.

Boilerplate (nav, header, footer, asides, cookie banners, share bars, scripts) is left out, but images
inside it are still reported (flagged) so they are counted where they are dropped. Each image keeps the
cues the filters need: its own and its ancestors' classes/ids, the link around it, its size attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, Tag

SKIP_TAGS = {
    "script",
    "style",
    "noscript",
    "iframe",
    "form",
    "svg",
    "nav",
    "footer",
    "header",
    "aside",
    "button",
    "select",
    "template",
    "head",
}
BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "table",
    "tr",
    "td",
    "th",
    "dd",
    "dt",
    "body",
}
BOILERPLATE = re.compile(
    r"(?:^|[\s_-])(nav|navbar|menu|footer|header|cookie|cookies|consent|banner|share|social|subscribe|newsletter|"
    r"comments?|sidebar|breadcrumbs?|related|popup|modal)(?:$|[\s_-])",
    re.I,
)

AD_CUE = re.compile(
    r"(?:^|[\s_-])(ad|ads|advert|adverts|advertisement|sponsor|sponsored|promo|promoted)(?:$|[\s_-])", re.I
)


class PageError(ValueError):
    """The page cannot be read as HTML with content (corrupt bytes, no body text)."""


@dataclass
class TextBlock:
    text: str  # Markdown: links as [text](url), headings with '#'
    heading: int = 0


@dataclass
class ImageBlock:
    src: str
    alt: str = ""
    width: int | None = None  # from the markup, if given
    height: int | None = None
    cues: list[str] = field(default_factory=list)  # classes and ids of the image and its ancestors
    link: str | None = None  # href of an enclosing <a>
    boilerplate: bool = False


Block = TextBlock | ImageBlock


def _attr_int(value) -> int | None:
    try:
        return int(str(value).strip().removesuffix("px"))
    except (TypeError, ValueError):
        return None


def _names(tag: Tag) -> list[str]:
    classes = tag.get("class") or []
    return [*classes, *([tag["id"]] if tag.get("id") else [])]


def decode_html(data: bytes) -> str:
    if not data.strip():
        raise PageError("empty page")
    if b"\x00" in data[:4096]:
        raise PageError("binary data, not HTML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PageError(f"not valid UTF-8 ({err.reason} at byte {err.start})") from None


def page_blocks(data: bytes) -> tuple[str, list[Block]]:
    """(title, blocks) of a page; raises PageError when it is not a readable page."""
    soup = BeautifulSoup(decode_html(data), "lxml")
    if soup.body is None:
        raise PageError("no <body>")
    title_tag = soup.title or soup.find("h1")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
    walker = _Walker()
    walker.walk(soup.body, cues=[], link=None, boilerplate=False)
    walker.flush()
    if not any(isinstance(b, TextBlock) for b in walker.blocks):
        raise PageError("no body text")
    return title, walker.blocks


class _Walker:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.buffer: list[str] = []
        self.heading = 0

    def flush(self) -> None:
        text = " ".join("".join(self.buffer).replace("\xa0", " ").split())
        if text:
            self.blocks.append(
                TextBlock(("#" * self.heading + " " if self.heading else "") + text, self.heading)
            )
        self.buffer = []

    def walk(self, el, cues: list[str], link: str | None, boilerplate: bool) -> None:
        if isinstance(el, Comment | Doctype):
            return
        if isinstance(el, NavigableString):
            if not boilerplate:
                self.buffer.append(str(el))
            return
        if not isinstance(el, Tag):
            return
        name = el.name
        names = _names(el)
        skip = (
            boilerplate or name in SKIP_TAGS or any(BOILERPLATE.search(n) or AD_CUE.search(n) for n in names)
        )
        cues = [*cues, *names]
        if name == "img":
            self.flush()
            self.blocks.append(
                ImageBlock(
                    src=el.get("src") or "",
                    alt=el.get("alt") or "",
                    width=_attr_int(el.get("width")),
                    height=_attr_int(el.get("height")),
                    cues=cues,
                    link=link,
                    boilerplate=skip,
                )
            )
            return
        if skip and not el.find("img"):
            return
        if name == "figcaption":  # describes its figure's image, not the page: out of the text flow
            skip = True
        if name == "br" and not skip:
            self.buffer.append("\n")
        block = name in BLOCK_TAGS and not skip
        if block:
            self.flush()
            self.heading = int(name[1]) if re.fullmatch(r"h[1-6]", name) else 0
        href = el.get("href") if name == "a" else None
        bracket = bool(href) and not skip and el.find("img") is None
        if bracket:
            self.buffer.append("[")
        for child in el.children:
            self.walk(child, cues, href or link, skip)
        if bracket:
            self.buffer.append(f"]({href})")
        if block:
            self.flush()
            self.heading = 0
