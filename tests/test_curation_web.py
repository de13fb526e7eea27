"""The web stage end to end, as a user runs it: `duogen curate web` over the toy world's noisy pages."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from duogen.components.curation.executor import StageContext, WorkUnit
from duogen.components.curation.shards import read_shard
from duogen.components.curation.web import web_stage
from duogen.components.curation.web_eval import evaluate
from duogen.components.toyworld.pages import make_site

DUOGEN = str(Path(sys.executable).parent / "duogen")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_site(root, 40, seed=11, corrupt_pages=3)
    return root


def curate(site_pages, out, *extra):
    cmd = [DUOGEN, "curate", "web", str(site_pages), "--out", str(out), "--quiet", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def shard_hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("shard-*.tar"))}


def test_cleans_pages_back_to_the_ground_truth(site, tmp_path):
    report = curate(site / "pages", tmp_path / "out", "--per-shard", "8", "--processes", "2")
    counters = report["counters"]
    assert counters["pages_in"] == 43 and counters["pages_dropped:corrupt_page"] == 3
    assert counters["pages_kept"] == 40
    metrics = evaluate(site, tmp_path / "out")
    for key in ("qr_recall", "icon_recall", "ad_recall", "tracking_pixel_recall", "duplicate_recall",
                "filter_precision", "reorder_accuracy", "step_count_match"):  # fmt: skip
        assert metrics[key] >= 0.95, (key, metrics)
    samples = [s for shard in sorted((tmp_path / "out").glob("shard-*.tar")) for s, _ in read_shard(shard)]
    first = samples[0]
    assert [t.role for t in first.turns] == ["user", "assistant"]
    assistant = first.turns[1].parts
    assert any(p.type == "bov" for p in assistant)
    assert all(assistant[i + 1].type == "image" for i, p in enumerate(assistant) if p.type == "bov")
    texts = [p.text for p in assistant if p.type == "text"]
    assert all("http" not in t and "[edit]" not in t for t in texts)
    assert first.lineage.stages["web"] and first.lineage.dropped


def test_killed_run_resumes_to_the_same_shards(site, tmp_path):
    whole = tmp_path / "whole"
    curate(site / "pages", whole, "--per-shard", "3")
    killed = tmp_path / "killed"
    cmd = [DUOGEN, "curate", "web", str(site / "pages"), "--out", str(killed), "--quiet", "--per-shard", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(killed.glob("*.manifest.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; use more shards"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(killed.glob("*.manifest.json")))
    assert 3 <= done_before < len(shard_hashes(whole))
    report = curate(site / "pages", killed, "--per-shard", "3")
    assert report["shards_skipped"] == done_before
    assert shard_hashes(killed) == shard_hashes(whole)
    assert not list(killed.glob("*.tmp"))
    assert report["counters"] == json.loads((whole / "_report.json").read_text())["counters"]


def _png(colour, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_warc_input(tmp_path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    page = (b"<html><body><h1>How to paint</h1><p>Step 1: Paint it red.</p><img src='a.png'>"
            b"<p>Step 2: Paint it blue.</p><img src='/img/b.png'></body></html>")  # fmt: skip
    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, ctype, body in [
            ("https://howto.example/paint/", "text/html", page),
            ("https://howto.example/paint/a.png", "image/png", _png((200, 0, 0))),
            ("https://howto.example/img/b.png", "image/png", _png((0, 0, 200))),
        ]:
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))  # fmt: skip
    ctx = StageContext(0)
    ((sample, files),) = web_stage(WorkUnit(0, [str(path)]), ctx)
    assert sample.lineage.input == "https://howto.example/paint/"
    assert [p.type for p in sample.turns[1].parts] == ["text", "bov", "image", "text", "bov", "image"]
    assert sorted(files.values()) == sorted([_png((200, 0, 0)), _png((0, 0, 200))])


def test_comm_json_input(tmp_path):
    shutil.copy(DATA / "comm" / "task1_results.json", tmp_path / "results.json")
    colours = [(200, 0, 0), (0, 150, 0), (0, 0, 200), (200, 200, 0), (150, 0, 150)]
    for i, c in enumerate(colours, 1):
        Image.new("RGB", (64, 64), c).save(tmp_path / f"input_{i}.jpg", quality=95)
    ctx = StageContext(0)
    items = web_stage(WorkUnit(0, [str(tmp_path / "results.json")]), ctx)
    assert len(items) == 1
    sample, files = items[0]
    assert len(files) == 5 and sample.source == "web"


def test_corrupt_inputs_are_counted_not_fatal(tmp_path):
    (tmp_path / "bad.html").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "empty.html").write_bytes(b"")
    ctx = StageContext(0)
    assert web_stage(WorkUnit(0, [str(tmp_path / "bad.html"), str(tmp_path / "empty.html"),
                                  str(tmp_path / "missing.html")]), ctx) == []  # fmt: skip
    assert ctx.counters["pages_dropped:corrupt_page"] == 2
    assert ctx.counters["pages_dropped:unreadable_input"] == 1


def test_optional_mllm_advert_check_catches_unmarked_banners(tmp_path):
    import io as _io

    def png(size, colour):
        buf = _io.BytesIO()
        Image.new("RGB", size, colour).save(buf, format="PNG")
        return buf.getvalue()

    (tmp_path / "step.png").write_bytes(png((64, 64), (200, 0, 0)))
    (tmp_path / "banner.png").write_bytes(png((180, 40), (0, 0, 200)))
    (tmp_path / "p.html").write_text(
        "<html><body><h1>How to paint</h1><p>Step 1: Paint it red.</p><img src='step.png'>"
        "<img src='banner.png'></body></html>"
    )
    plain, checked = StageContext(0), StageContext(0, {"mllm_ad_check": True})
    (without,) = web_stage(WorkUnit(0, [str(tmp_path / "p.html")]), plain)
    (with_check,) = web_stage(WorkUnit(0, [str(tmp_path / "p.html")]), checked)
    assert len(without[1]) == 2 and len(with_check[1]) == 1
    assert checked.counters["images_dropped:advert_mllm"] == 1
    assert with_check[0].lineage.dropped == {"banner.png": "advert_mllm"}


def test_llm_failure_drops_the_page_not_the_shard(tmp_path, monkeypatch):
    from duogen.components.curation import web
    from duogen.platform.llm import LLMError

    class Failing:
        name = "failing"

        def run_many(self, requests):
            raise LLMError("server said no", status=400)

    monkeypatch.setattr(web, "backend_for", lambda spec: Failing())
    site = tmp_path / "site"
    make_site(site, 2, seed=3)
    ctx = StageContext(0)
    assert web.web_stage(WorkUnit(0, sorted(str(p) for p in (site / "pages").glob("*.html"))), ctx) == []
    assert ctx.counters["pages_dropped:llm_error"] == 2 and ctx.counters["llm_error:400"] == 2
