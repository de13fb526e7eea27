"""Toy-world how-to pages: deterministic, noisy in every planted way, consistent with their ground truth."""

import html as htmlmod
import io
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from duogen.components.toyworld import (
    WorldConfig,
    apply,
    compare,
    describe,
    find_shapes,
    make_site,
    task_from_json,
)
from duogen.components.toyworld.pages import NOISE_KINDS, ROLES

CFG = WorldConfig()
N_PAGES, N_CORRUPT = 200, 8


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    ids = make_site(out, N_PAGES, seed=3, corrupt_pages=N_CORRUPT)
    elapsed = time.perf_counter() - start
    truths = {p.stem: json.loads(p.read_text()) for p in sorted((out / "truth").glob("page-*.json"))}
    return out, ids, truths, elapsed


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_site_and_other_seeds_differ(tmp_path):
    make_site(tmp_path / "a", 12, seed=9, corrupt_pages=2)
    make_site(tmp_path / "b", 12, seed=9, corrupt_pages=2)
    make_site(tmp_path / "c", 12, seed=10, corrupt_pages=2)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_generation_is_fast_and_ids_cover_good_and_corrupt_pages(site):
    out, ids, truths, elapsed = site
    assert elapsed < 10.0
    assert len(ids) == N_PAGES + N_CORRUPT == len(set(ids))
    corrupt = json.loads((out / "truth" / "_corrupt_pages.json").read_text())
    assert len(corrupt["page_ids"]) == N_CORRUPT
    assert set(truths) | set(corrupt["page_ids"]) == set(ids)
    assert not set(truths) & set(corrupt["page_ids"])


def test_corrupt_pages_are_unreadable_or_empty(site):
    out, _, _, _ = site
    corrupt = json.loads((out / "truth" / "_corrupt_pages.json").read_text())
    assert set(corrupt["kinds"].values()) == {"binary", "invalid_utf8", "empty", "no_text"}
    for page_id, kind in corrupt["kinds"].items():
        data = (out / "pages" / f"{page_id}.html").read_bytes()
        if kind == "empty":
            assert data == b""
        elif kind == "no_text":
            body = re.sub(r"<[^>]+>", "", data.decode().split("<body>", 1)[1]).strip()
            assert body == "" and b"<img" not in data
        else:
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")


def test_truth_matches_files_html_and_task(site):
    out, _, truths, _ = site
    for page_id, t in truths.items():
        assert set(t) >= {
            "page_id",
            "title",
            "question",
            "initial_image",
            "steps",
            "images",
            "misplaced_steps",
        }
        page = (out / "pages" / f"{page_id}.html").read_text(encoding="utf-8")
        srcs = re.findall(r'<img src="([^"]+)"', page)
        assert sorted(srcs) == sorted(v["src"] for v in t["images"].values())
        on_disk = {p.name for p in (out / "img" / page_id).iterdir()}
        local = {n for n, v in t["images"].items() if v["local"]}
        assert on_disk == local
        for name, v in t["images"].items():
            assert v["role"] in ROLES
            if v["local"]:
                assert v["src"] == f"../img/{page_id}/{name}"
            else:
                assert v["src"].startswith("https://") and v["role"] in ("ad", "tracking_pixel")
        task = task_from_json(t["task"])
        assert [s["text"] for s in t["steps"]] == task.instructions(CFG)
        for k, action in enumerate(task.actions):
            assert apply(task.scenes[k], action, CFG) == task.scenes[k + 1]
            assert describe(action, task.scenes[k], CFG) == t["steps"][k]["text"]
            assert t["images"][t["steps"][k]["image"]] == {
                "role": "step",
                "step": k,
                "src": f"../img/{page_id}/{t['steps'][k]['image']}",
                "local": True,
            }
        assert t["images"][t["initial_image"]]["role"] == "initial"
        text = htmlmod.unescape(re.sub(r"<[^>]+>", "", page))
        assert t["title"] in text and t["question"] in text
        for s in t["steps"]:
            assert s["text"] in text


def test_step_images_show_the_true_scenes_and_noise_images_have_their_shape(site):
    out, _, truths, _ = site
    qr = cv2.QRCodeDetector()
    for page_id, t in list(truths.items())[:60]:
        task = task_from_json(t["task"])
        img_dir = out / "img" / page_id

        def load(name, img_dir=img_dir):
            img = Image.open(io.BytesIO((img_dir / name).read_bytes()))
            img.load()
            return img

        assert compare(task.scenes[0], find_shapes(load(t["initial_image"]), CFG))["score"] == 1.0
        for k, s in enumerate(t["steps"]):
            assert compare(task.scenes[k + 1], find_shapes(load(s["image"]), CFG))["score"] == 1.0
        for name, v in t["images"].items():
            if not v["local"]:
                continue
            if v["role"] == "corrupt":
                with pytest.raises(OSError):
                    load(name)
                continue
            img = load(name)
            if v["role"] == "tracking_pixel":
                assert img.size == (1, 1)
            elif v["role"] == "icon":
                assert 16 <= img.width <= 32 and img.width == img.height
            elif v["role"] == "ad":
                assert img.width >= 2.5 * img.height
            elif v["role"] == "qr":
                assert qr.detectAndDecode(np.asarray(img.convert("RGB")))[0].startswith("https://")
            elif v["role"] == "duplicate":
                assert (img_dir / name).read_bytes() == (
                    img_dir / t["steps"][v["step"]]["image"]
                ).read_bytes()
            elif v["role"] == "near_duplicate":
                step = load(t["steps"][v["step"]]["image"])
                assert (img_dir / name).read_bytes() != (
                    img_dir / t["steps"][v["step"]]["image"]
                ).read_bytes()
                assert abs(img.width - step.width) <= 0.1 * step.width + 1
                found = find_shapes(img.convert("RGB").resize(step.size), CFG)
                assert compare(task.scenes[v["step"] + 1], found)["score"] >= 0.5


def test_duplicates_follow_their_image_and_misplaced_images_precede_their_step(site):
    out, _, truths, _ = site
    for page_id, t in truths.items():
        page = (out / "pages" / f"{page_id}.html").read_text(encoding="utf-8")
        srcs = re.findall(r'<img src="([^"]+)"', page)
        for v in t["images"].values():
            if v["role"] in ("duplicate", "near_duplicate"):
                at = srcs.index(v["src"])
                prev = [n for n in t["images"] if t["images"][n]["src"] == srcs[at - 1]][0]
                assert t["images"][prev]["step"] == v["step"]
                assert t["images"][prev]["role"] in ("step", "duplicate")
        for k, s in enumerate(t["steps"]):
            img_at = page.index(t["images"][s["image"]]["src"])
            text_at = page.index(f"Step {k + 1}:")
            assert (img_at < text_at) == (k in t["misplaced_steps"])


def test_every_noise_kind_appears_on_a_fair_share_of_pages(site):
    _, _, truths, _ = site
    for kind in NOISE_KINDS:
        share = sum(t["noise"][kind] > 0 for t in truths.values()) / len(truths)
        assert 0.25 <= share <= 0.65, (kind, share)
    roles = {v["role"] for t in truths.values() for v in t["images"].values()}
    assert roles == set(ROLES)
    externals = [v for t in truths.values() for v in t["images"].values() if not v["local"]]
    assert {v["role"] for v in externals} == {"ad", "tracking_pixel"}


def test_icons_are_not_only_marked_by_class_names(site):
    out, _, truths, _ = site
    plain = 0
    for page_id, t in truths.items():
        page = (out / "pages" / f"{page_id}.html").read_text(encoding="utf-8")
        for v in t["images"].values():
            if v["role"] == "icon":
                tag = re.search(rf'<img src="{re.escape(v["src"])}"[^>]*>', page).group(0)
                plain += 'class="icon' not in tag
    assert plain >= 20
