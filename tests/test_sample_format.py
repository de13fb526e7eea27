"""The common sample format and WebDataset shards: round trip, manifest, clear errors on bad records."""

import io
import json
import tarfile

import pytest
from PIL import Image

from duogen.components.curation.sample import Lineage, Part, Sample, SampleFormatError, Turn, sha256
from duogen.components.curation.shards import (
    index_shard,
    manifest_path,
    read_manifest,
    read_shard,
    write_shard,
)


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def _sample(i: int) -> tuple[Sample, dict[str, bytes]]:
    img0, img1 = _png((200, 0, 0)), _png((0, 0, 200))
    sample = Sample(
        id=f"page-{i:04d}",
        turns=[
            Turn(
                "user",
                [Part("text", text="How do I recolour the red square?"), Part("image", ref="img0.png")],
            ),
            Turn(
                "assistant", [Part("text", text="Paint it blue."), Part("bov"), Part("image", ref="img1.png")]
            ),
        ],
        source="toyworld",
        lineage=Lineage(
            "toyworld://seed/1", {"web": "1"}, {"img0.png": sha256(img0), "img1.png": sha256(img1)}
        ),
    )
    return sample, {"img0.png": img0, "img1.png": img1}


def test_round_trip_through_a_shard(tmp_path):
    items = [_sample(i) for i in range(5)]
    manifest = write_shard(tmp_path / "shard-000.tar", items)
    assert manifest["samples"] == 5 and manifest["images"] == 10 and manifest["sources"] == {"toyworld": 5}
    assert read_manifest(tmp_path / "shard-000.tar") == manifest
    back = list(read_shard(tmp_path / "shard-000.tar"))
    assert [s for s, _ in back] == [s for s, _ in items]
    assert [imgs for _, imgs in back] == [imgs for _, imgs in items]
    indexed = list(index_shard(tmp_path / "shard-000.tar"))  # images left in the tar until asked for
    assert [e.sample for e in indexed] == [s for s, _ in items]
    assert [e.read_images() for e in indexed] == [imgs for _, imgs in items]


def test_same_samples_give_the_same_bytes(tmp_path):
    items = [_sample(i) for i in range(3)]
    a = write_shard(tmp_path / "a.tar", items)
    b = write_shard(tmp_path / "b.tar", items)
    assert a["sha256"] == b["sha256"]


def test_altered_shard_or_missing_manifest_is_refused(tmp_path):
    path = tmp_path / "s.tar"
    write_shard(path, [_sample(0)])
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SampleFormatError, match="does not match its manifest"):
        list(read_shard(path))
    with pytest.raises(SampleFormatError, match="does not match its manifest"):
        list(index_shard(path))
    manifest_path(path).unlink()
    with pytest.raises(SampleFormatError, match="has no manifest"):
        list(read_shard(path))


def _record(**change):
    record = _sample(0)[0].to_dict()
    record.update(change)
    return record


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ([], "must be a JSON object"),
        (_record(id=""), "no string 'id'"),
        ({"id": "x", "turns": []}, "missing field 'source'"),
        (_record(turns=[]), "non-empty list"),
        (_record(turns=[{"role": "robot", "parts": [{"type": "text", "text": "hi"}]}]), "valid role"),
        (_record(turns=[{"role": "user", "parts": [{"type": "video"}]}]), "part type"),
        (_record(turns=[{"role": "user", "parts": [{"type": "image"}]}]), "without a 'ref'"),
        (_record(turns=[{"role": "user", "parts": [{"type": "bov"}, {"type": "image", "ref": "a.png"}]}]),
         "outside an assistant turn"),
        (_record(turns=[{"role": "assistant", "parts": [{"type": "bov"}]}]), "not followed by an image"),
        (_record(lineage={}), "lineage must be"),
    ],
)  # fmt: skip
def test_bad_records_name_the_problem(record, words):
    with pytest.raises(SampleFormatError, match=words):
        Sample.from_dict(record)


def test_writer_refuses_bad_ids_and_missing_images(tmp_path):
    sample, images = _sample(0)
    sample.id = "bad.id"
    with pytest.raises(SampleFormatError, match="tar key"):
        write_shard(tmp_path / "x.tar", [(sample, images)])
    sample, images = _sample(1)
    del images["img1.png"]
    with pytest.raises(SampleFormatError, match="img1.png"):
        write_shard(tmp_path / "y.tar", [(sample, images)])
    assert not (tmp_path / "y.tar").exists() and not manifest_path(tmp_path / "y.tar").exists()


def test_a_bad_record_inside_a_shard_is_named(tmp_path):
    path = tmp_path / "s.tar"
    write_shard(path, [_sample(0)])
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo("page-9999.json")
        payload = json.dumps({"id": "page-9999", "turns": "nope", "source": "web", "lineage": {"input": "u"}})
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload.encode()))
    with pytest.raises(SampleFormatError, match="'page-9999'.*non-empty list"):
        list(read_shard(path, verify=False))
