"""Shards: WebDataset tar files of samples + images, each with a manifest (counts, sizes, hash).

`read_shard` yields whole samples (images included); `index_shard` yields them with only the places of their
images in the tar, for readers that keep many samples but decode few at a time (training).

Inside a tar, a sample is the group of members sharing a key: `KEY.json` (the sample) and `KEY.REF` for
each image it references (REF like `img0.png`). A shard is written to a temporary name and renamed at the
end, with its manifest last, so a shard with a manifest is complete and a killed writer leaves none.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .sample import Sample, SampleFormatError, sha256

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
REF_RE = re.compile(r"^[A-Za-z0-9_-]+\.(png|jpg|jpeg|webp)$")


def manifest_path(shard: str | Path) -> Path:
    return Path(str(shard) + ".manifest.json")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible bytes: the same samples give the same shard hash
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | Path, items: list[tuple[Sample, dict[str, bytes]]]) -> dict:
    """Write samples (each with its images by ref) as one tar + manifest; returns the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sources: Counter = Counter()
    n_images = 0
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample, images in items:
            if not KEY_RE.match(sample.id):
                raise SampleFormatError(
                    f"sample id {sample.id!r} must match {KEY_RE.pattern} (it is the tar key)"
                )
            sample.validate()
            refs = sample.image_refs()
            for ref in refs:
                if not REF_RE.match(ref) or ref not in images:
                    raise SampleFormatError(
                        f"sample {sample.id!r}: image ref {ref!r} is invalid or has no data"
                    )
            _add(tar, f"{sample.id}.json", json.dumps(sample.to_dict(), sort_keys=True).encode())
            for ref in dict.fromkeys(refs):
                _add(tar, f"{sample.id}.{ref}", images[ref])
                n_images += 1
            sources[sample.source] += 1
    data = tmp.read_bytes()
    manifest = {
        "shard": path.name,
        "samples": len(items),
        "images": n_images,
        "bytes": len(data),
        "sha256": sha256(data),
        "sources": dict(sorted(sources.items())),
    }
    os.replace(tmp, path)
    manifest_path(path).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(path: str | Path) -> dict:
    mpath = manifest_path(path)
    if not mpath.exists():
        raise SampleFormatError(f"shard {path} has no manifest ({mpath.name}): it is incomplete")
    return json.loads(mpath.read_text())


def read_shard(path: str | Path, verify: bool = True) -> Iterator[tuple[Sample, dict[str, bytes]]]:
    """Yield (sample, images by ref), validated; with `verify` the tar must match its manifest's hash."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify and sha256(path.read_bytes()) != manifest["sha256"]:
        raise SampleFormatError(f"shard {path.name} does not match its manifest hash (corrupt or altered)")
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            groups.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    for key, files in groups.items():
        if "json" not in files:
            raise SampleFormatError(f"shard {path.name}: key {key!r} has images but no sample JSON")
        try:
            record = json.loads(files["json"])
        except json.JSONDecodeError as err:
            raise SampleFormatError(f"shard {path.name}: sample {key!r} is not valid JSON ({err})") from None
        sample = Sample.from_dict(record)
        missing = [r for r in sample.image_refs() if r not in files]
        if missing:
            raise SampleFormatError(f"shard {path.name}: sample {key!r} references missing images {missing}")
        yield sample, {r: files[r] for r in sample.image_refs()}


@dataclass(frozen=True)
class IndexedSample:
    """A sample whose images stay in its shard: where each image's bytes sit (offset, size) in the tar."""

    sample: Sample
    shard: Path
    images: tuple[tuple[str, int, int], ...]  # (ref, offset, size)

    def read_images(self) -> dict[str, bytes]:
        with open(self.shard, "rb") as f:
            out = {}
            for ref, offset, size in self.images:
                f.seek(offset)
                out[ref] = f.read(size)
            return out


def _file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def index_shard(path: str | Path, verify: bool = True) -> Iterator[IndexedSample]:
    """The shard's samples without their image bytes (read later with `IndexedSample.read_images`): a
    training process keeps this index in memory, not the images. With `verify` the tar must match its
    manifest's hash (checked in chunks, never the whole file in memory)."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify and _file_sha256(path) != manifest["sha256"]:
        raise SampleFormatError(f"shard {path.name} does not match its manifest hash (corrupt or altered)")
    records: dict[str, bytes] = {}
    places: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if suffix == "json":
                records[key] = tar.extractfile(member).read()
            else:
                places.setdefault(key, {})[suffix] = (member.offset_data, member.size)
    for key in places.keys() - records.keys():
        raise SampleFormatError(f"shard {path.name}: key {key!r} has images but no sample JSON")
    for key, raw in records.items():
        try:
            sample = Sample.from_dict(json.loads(raw))
        except json.JSONDecodeError as err:
            raise SampleFormatError(f"shard {path.name}: sample {key!r} is not valid JSON ({err})") from None
        found = places.get(key, {})
        missing = [r for r in sample.image_refs() if r not in found]
        if missing:
            raise SampleFormatError(f"shard {path.name}: sample {key!r} references missing images {missing}")
        yield IndexedSample(sample, path, tuple((r, *found[r]) for r in sample.image_refs()))
