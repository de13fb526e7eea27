"""The DALI image loader on CPU: every image of the shards, decoded and resized like PIL would."""

import io

import numpy as np
import pytest
from PIL import Image

from duogen.components.curation.sample import Lineage, Part, Sample, Turn
from duogen.components.curation.shards import write_shard
from duogen.components.training.dali_images import DaliImageLoader


def _encoded(colour, size, fmt):
    buf = io.BytesIO()
    img = Image.new("RGB", size, colour)
    img.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 2))
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_decodes_and_resizes_every_image(tmp_path):
    items = []
    for i in range(5):
        files = {
            "img0.png": _encoded((200, 20, 20), (64, 48), "PNG"),
            "img1.jpg": _encoded((20, 20, 200), (80, 80), "JPEG"),
        }
        turns = [
            Turn("user", [Part("text", text="go")]),
            Turn(
                "assistant",
                [Part("bov"), Part("image", ref="img0.png"), Part("bov"), Part("image", ref="img1.jpg")],
            ),
        ]
        items.append((Sample(f"s{i}", turns, "test", Lineage("x")), files))
    write_shard(tmp_path / "shard-00000.tar", items)
    loader = DaliImageLoader([tmp_path / "shard-00000.tar"], batch_size=4, size=(32, 32), device="cpu")
    batches = list(loader)
    assert [b.images.shape[0] for b in batches] == [4, 4, 2]
    assert all(b.images.shape[1:] == (32, 32, 3) for b in batches)
    assert [r for b in batches for r in b.refs] == ["img0.png", "img1.jpg"] * 5
    first = batches[0].images[0].numpy().astype(int)
    expected = np.asarray(
        Image.open(io.BytesIO(items[0][1]["img0.png"])).resize((32, 32), Image.BILINEAR), int
    )
    assert np.abs(first - expected).mean() < 8


def test_gpu_requested_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        DaliImageLoader([], device="gpu")
    with pytest.raises(ValueError, match="device must be"):
        DaliImageLoader([], device="tpu")
