"""Alignment adapters: ShareGPT-4o-Image and instruction-pair JSONL into the common sample format."""

import json

from PIL import Image

from duogen.components.curation.alignment import alignment_stage
from duogen.components.curation.executor import StageContext, WorkUnit


def _img(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def test_sharegpt4o_image_layout(tmp_path):
    _img(tmp_path / "output_image" / "a.png", "red")
    _img(tmp_path / "output_image" / "b.png", "blue")
    _img(tmp_path / "input_image" / "c.png", "green")
    (tmp_path / "text_to_image.json").write_text(
        json.dumps(
            [
                {
                    "input_prompt": "A red square.",
                    "output_image": "output_image/a.png",
                    "output_image_resolution": [32, 32],
                },
                {"input_prompt": "Lost image.", "output_image": "output_image/missing.png"},
            ]
        )
    )
    (tmp_path / "text_and_image_to_image.json").write_text(
        json.dumps(
            [
                {
                    "input_prompt": "Make it blue.",
                    "input_image": ["input_image/c.png"],
                    "output_image": "output_image/b.png",
                },
            ]
        )
    )
    ctx = StageContext(0)
    unit = WorkUnit(0, [str(tmp_path / "text_to_image.json"), str(tmp_path / "text_and_image_to_image.json")])
    items = alignment_stage(unit, ctx)
    assert len(items) == 2
    assert ctx.counters["records_dropped:bad_image"] == 1
    assert ctx.counters["text_to_image"] == 1 and ctx.counters["editing"] == 1
    t2i, edit = (s for s, _ in items)
    assert [p.type for p in t2i.turns[0].parts] == ["text"] and t2i.turns[0].parts[0].text == "A red square."
    assert [p.type for p in t2i.turns[1].parts] == ["bov", "image"]
    assert [p.type for p in edit.turns[0].parts] == ["image", "text"]
    assert edit.source == "alignment" and set(edit.lineage.hashes) == set(items[1][1])


def test_instruction_pair_jsonl(tmp_path):
    _img(tmp_path / "src.png", "red")
    _img(tmp_path / "dst.png", "blue")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n-truncated")
    lines = [
        {"instruction": "Turn it blue.", "source_image": "src.png", "target_image": "dst.png"},
        {"edit_instruction": "Broken.", "input_image": "src.png", "edited_image": "bad.png"},
        {"nothing": "useful"},
        "not an object",
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ctx = StageContext(0)
    items = alignment_stage(WorkUnit(0, [str(tmp_path / "pairs.jsonl"), str(tmp_path / "nope.jsonl")]), ctx)
    assert len(items) == 1
    counts = ctx.counters
    assert counts["records_in"] == 4 and counts["records_dropped:bad_image"] == 1
    assert counts["records_dropped:missing_fields"] == 1 and counts["records_dropped:not_an_object"] == 1
    assert counts["files_dropped:unreadable"] == 1
