"""Training-side image loading with NVIDIA DALI: decode and resize the images of curated shards.

Samples are read from the WebDataset shards in Python (they are small JSON records); the encoded image bytes
go to a DALI pipeline through `external_source`, where they are decoded and resized. On CPU machines the
pipeline runs with CPU operators (`device_id=None`); on a GPU node `device="gpu"` decodes with nvJPEG
(DALI's "mixed" decoder) and resizes on the GPU. The GPU path is written the same way but is untested here:
this machine has no GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from duogen.components.curation.shards import read_shard


@dataclass
class ImageBatch:
    images: torch.Tensor  # [B, H, W, 3] uint8
    sample_ids: list[str]
    refs: list[str]


def gpu_available() -> bool:
    return torch.cuda.is_available()


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
            device_id=0 if gpu else None,
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
