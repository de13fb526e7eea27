"""One registry of curation sources (components/curation/registry.py): the CLI, the pipeline's fan-out and
defaults, the dataset manifest and both training stages read it, so a new source is one entry there."""

from __future__ import annotations

import inspect
import json

import pytest

from duogen.components.curation import registry
from duogen.components.curation.fanout import CurationPlan, source_inputs
from duogen.components.curation.registry import Source
from duogen.components.training.config import load_config
from duogen.components.training.stage_job import manifest_shards


@pytest.fixture
def extra(monkeypatch):
    """A new source, added the one way there is."""
    new = Source("slides", (".pdf",), "web:web_stage", stage1=True, stage2_weight=0.5, folder="slides")
    monkeypatch.setitem(registry.SOURCES, "slides", new)
    return new


def test_a_new_source_is_read_by_every_consumer(extra, tmp_path):
    assert "slides" in registry.stage1_sources() and registry.stage2_mix()["slides"] == 0.5
    assert load_config(stage="stage2").mix["slides"] == 0.5  # Stage 2 draws it
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sources": {"slides": ["s3://b/slides-0"], "video": ["s3://b/v-0"]}}))
    assert manifest_shards(str(manifest), "stage1") == ["s3://b/slides-0"]  # Stage 1 reads its dialogues
    assert manifest_shards(str(manifest), "stage2") == ["s3://b/slides-0", "s3://b/v-0"]
    (tmp_path / "world" / "slides").mkdir(parents=True)
    (tmp_path / "world" / "slides" / "deck.PDF").write_bytes(b"%PDF")
    (tmp_path / "world" / "slides" / "notes.txt").write_text("x")
    assert source_inputs("slides", CurationPlan(str(tmp_path / "world"))) == [
        str(tmp_path / "world" / "slides" / "deck.PDF")
    ]


def test_the_pipeline_and_the_cli_take_the_registrys_sources_and_input_kinds(tmp_path):
    from duogen.cli.curate import _inputs
    from duogen.components.pipeline.pipeline import duogen_pipeline

    sources = inspect.signature(duogen_pipeline.pipeline_func).parameters["sources"].default
    assert sources == list(registry.SOURCES)
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in ("a.html", "b.warc.gz", "results.json", "c.png"):
        (pages / name).write_bytes(b"x")
    found = {p.rsplit("/", 1)[-1] for p in _inputs([str(pages)], "web")}
    assert found == {"a.html", "b.warc.gz", "results.json"}  # what the pipeline's fan-out takes too
    assert {p.rsplit("/", 1)[-1] for p in source_inputs("web", CurationPlan(str(tmp_path)))} == found
    with pytest.raises(ValueError, match="unknown curation source 'slides'"):
        registry.source("slides")
