"""Training-side image decoding with NVIDIA DALI: the encoded images of curated shards, decoded and resized.

`DaliDecoder` is the training loop's image path (`TrainConfig.image_decoder`: DALI by default on a GPU
node): the encoded bytes of an example's images go to a DALI pipeline through `external_source`, are decoded
and resized to the size the pair takes (each side a multiple of `pair.pixel_multiple`, what `fit_to_multiple`
gives). On a GPU node the pipeline decodes with nvJPEG (DALI's "mixed" decoder) and resizes on the rank's own
GPU (`device_id` = its CUDA device, not GPU 0 for every rank), taking the JPEG decode off the CPU cores the
ranks share; on CPU machines it runs DALI's CPU operators. The pictures then come to the host once, for
Qwen2.5-VL's image processor. `DaliImageLoader` iterates over every image of some shards (a data check).
The GPU path is written the same way as the CPU one but is UNTESTED ON GPU here: this machine has none.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from duogen.components.curation.shards import read_shard


@dataclass
class ImageBatch:
    images: torch.Tensor  # [B, H, W, 3] uint8
    sample_ids: list[str]
    refs: list[str]


def gpu_available() -> bool:
    return torch.cuda.is_available()


def fitted_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """What `vae.fit_to_multiple` makes of a (w, h): each side rounded to a multiple, at least one."""
    return tuple(max(multiple, int(round(side / multiple)) * multiple) for side in size)


class DaliDecoder:
    """Decode an example's images (ref -> encoded bytes) with DALI on `device`, resized to the pair's fitted
    size; returns ref -> RGB PIL image. One pipeline, built on first use, takes up to `max_batch` images."""

    def __init__(
        self, device: torch.device, multiple: int, max_batch: int = 32, num_threads: int = 2
    ) -> None:
        if device.type == "cuda" and not gpu_available():
            raise RuntimeError("a GPU decoder was asked for, but CUDA is not available on this machine")
        self.device, self.multiple, self.max_batch, self.num_threads = (
            device,
            multiple,
            max_batch,
            num_threads,
        )
        self.pipe = None
        self.decoded = 0

    def _build(self):
        from nvidia.dali import fn, types
        from nvidia.dali.pipeline import Pipeline

        gpu = self.device.type == "cuda"
        device_id = (
            (self.device.index if self.device.index is not None else torch.cuda.current_device())
            if gpu
            else None
        )
        pipe = Pipeline(
            batch_size=self.max_batch,
            num_threads=self.num_threads,
            device_id=device_id,
            prefetch_queue_depth=1,
        )
        with pipe:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8)
            width = fn.external_source(name="width", dtype=types.FLOAT)
            height = fn.external_source(name="height", dtype=types.FLOAT)
            images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
            pipe.set_outputs(fn.resize(images, resize_x=width, resize_y=height))
        pipe.build()
        return pipe

    def __call__(self, encoded: dict[str, bytes]) -> dict[str, Image.Image]:
        refs = list(encoded)
        out: dict[str, Image.Image] = {}
        for start in range(0, len(refs), self.max_batch):
            chunk = refs[start : start + self.max_batch]
            sizes = [
                fitted_size(Image.open(io.BytesIO(encoded[r])).size, self.multiple) for r in chunk
            ]  # header
            if self.pipe is None:
                self.pipe = self._build()
            self.pipe.feed_input("encoded", [np.frombuffer(encoded[r], dtype=np.uint8) for r in chunk])
            self.pipe.feed_input("width", [np.array(w, dtype=np.float32) for w, _ in sizes])
            self.pipe.feed_input("height", [np.array(h, dtype=np.float32) for _, h in sizes])
            (batch,) = self.pipe.run()
            if self.device.type == "cuda":
                batch = batch.as_cpu()  # Qwen2.5-VL's image processor takes host images
            for k, ref in enumerate(chunk):
                out[ref] = Image.fromarray(np.array(batch.at(k)), "RGB")
            self.decoded += len(chunk)
        return out


class DaliImageLoader:
    """Iterate over every image of the given shards in batches of `batch_size`, resized to `size` (w, h)."""

    def __init__(
        self,
        shards: Sequence[str | Path],
        batch_size: int = 16,
        size: tuple[int, int] = (64, 64),
        device: str = "auto",
        num_threads: int = 2,
    ) -> None:
        if device == "auto":
            device = "gpu" if gpu_available() else "cpu"
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
        if device == "gpu" and not gpu_available():
            raise RuntimeError("device='gpu' asked for, but CUDA is not available on this machine")
        self.shards = [Path(s) for s in shards]
        self.batch_size = batch_size
        self.size = size
        self.device = device
        self.pipe = self._build(num_threads)

    def _build(self, num_threads: int):
        from nvidia.dali import fn, types
        from nvidia.dali.pipeline import Pipeline

        gpu = self.device == "gpu"
        pipe = Pipeline(
            batch_size=self.batch_size,
            num_threads=num_threads,
            device_id=torch.cuda.current_device() if gpu else None,  # this rank's GPU, not GPU 0
            prefetch_queue_depth=1,
        )
        with pipe:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8)
            images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
            images = fn.resize(images, resize_x=self.size[0], resize_y=self.size[1])
            pipe.set_outputs(images)
        pipe.build()
        return pipe

    def _encoded(self) -> Iterator[tuple[str, str, bytes]]:
        for shard in self.shards:
            for sample, files in read_shard(shard):
                for ref in sample.image_refs():
                    yield sample.id, ref, files[ref]

    def __iter__(self) -> Iterator[ImageBatch]:
        batch: list[tuple[str, str, bytes]] = []
        for item in self._encoded():
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._run(batch)
                batch = []
        if batch:
            yield self._run(batch)

    def _run(self, batch: list[tuple[str, str, bytes]]) -> ImageBatch:
        self.pipe.feed_input("encoded", [np.frombuffer(data, dtype=np.uint8) for _, _, data in batch])
        (out,) = self.pipe.run()
        array = out.as_cpu().as_array() if self.device == "gpu" else out.as_array()
        return ImageBatch(torch.from_numpy(array), [s for s, _, _ in batch], [r for _, r, _ in batch])
