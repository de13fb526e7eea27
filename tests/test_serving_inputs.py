"""Request images are refused before they can hurt the server, each with a reason; and the pair is found
wherever a user keeps it (folder, S3 on a real local SeaweedFS server, an MLflow registry alias)."""

from __future__ import annotations

import asyncio
import base64
import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from duogen.components.serving.inputs import ImageLimits, decode_base64, decode_image, load_image_url
from duogen.model.errors import DuoGenInputError
from duogen.platform.model_store import local_pair_dir

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import s3_server  # noqa: E402


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_a_valid_image_decodes():
    image = decode_image(encoded(Image.new("RGB", (20, 10), (1, 2, 3))), ImageLimits())
    assert image.size == (20, 10) and image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    ("data", "limits", "reason"),
    [
        (encoded(Image.new("L", (3000, 3000))), ImageLimits(max_pixels=1000 * 1000), "pixels"),
        (encoded(Image.new("L", (64, 64))), ImageLimits(max_bytes=10), "bytes"),
        (encoded(Image.effect_noise((64, 64), 90))[:2000], ImageLimits(), "corrupt"),
        (b"plain text, not a picture", ImageLimits(), "not a supported image"),
        (encoded(Image.new("RGB", (8, 8)), "TIFF"), ImageLimits(), "not a supported image"),
    ],
    ids=["decompression bomb", "too many bytes", "truncated", "not an image", "unsupported format"],
)
def test_bad_images_are_refused_with_a_reason(data, limits, reason):
    with pytest.raises(DuoGenInputError, match=reason):
        decode_image(data, limits)


def test_bad_base64_and_urls_are_refused():
    limits = ImageLimits(url_allow_list=("images.example",))
    with pytest.raises(DuoGenInputError, match="base64"):
        decode_base64("not*base64", limits)
    with pytest.raises(DuoGenInputError, match="data:image/png;base64"):
        asyncio.run(load_image_url("data:text/plain,hello", limits))
    with pytest.raises(DuoGenInputError, match="scheme"):
        asyncio.run(load_image_url("file:///etc/passwd", limits))
    with pytest.raises(DuoGenInputError, match="allow-list"):
        asyncio.run(load_image_url("http://127.0.0.1/x.png", limits))
    good = "data:image/png;base64," + base64.b64encode(encoded(Image.new("RGB", (4, 4)))).decode()
    assert asyncio.run(load_image_url(good, limits)).size == (4, 4)


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory) -> Path:
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    path = tmp_path_factory.mktemp("pair") / "tiny"
    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(path)
    return path


def _same_files(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".complete"
    )
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(DuoGenInputError, match="does not exist"):
        local_pair_dir(tmp_path / "nowhere")


def test_a_pair_on_s3_is_fetched_once(saved_pair, tmp_path, monkeypatch):
    with s3_server(tmp_path / "s3") as s3:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        s3.create_bucket("models")
        s3.filesystem().put(str(saved_pair) + "/", "models/duogen/v1/", recursive=True)
        local = local_pair_dir("s3://models/duogen/v1", cache=tmp_path / "cache")
        _same_files(saved_pair, local)
        assert local_pair_dir("s3://models/duogen/v1", cache=tmp_path / "cache") == local  # cached
        with pytest.raises(DuoGenInputError, match="does not exist"):
            local_pair_dir("s3://models/duogen/v2", cache=tmp_path / "cache")


def test_an_mlflow_alias_resolves_to_the_registered_pair(saved_pair, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("serve", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(saved_pair), artifact_path="model")
    client = mlflow.MlflowClient()
    client.create_registered_model("duogen")
    version = client.create_model_version("duogen", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("duogen", "champion", version.version)
    local = local_pair_dir("models:/duogen@champion", cache=tmp_path / "cache")
    _same_files(saved_pair, local)
    with pytest.raises(DuoGenInputError, match="duogen@nobody"):
        local_pair_dir("models:/duogen@nobody", cache=tmp_path / "cache")


def test_the_dtype_flag_offers_exactly_the_predictors_dtypes():
    """`--dtype` choices are spelt out in arguments.py so that `duogen --help` does not import torch; fails
    when a dtype is added to the predictor and not to the flag (or the other way round)."""
    from duogen.components.serving.arguments import DTYPE_NAMES
    from duogen.components.serving.predictor import DTYPES

    assert sorted(DTYPE_NAMES) == sorted(DTYPES)
