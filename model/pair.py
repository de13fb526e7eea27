"""The DuoGen pair: MLLM + connector + DiT + VAE, saved to and loaded from one directory.

Layout of a saved pair:
    duogen_config.json   the whole `DuoGenConfig`
    mllm/                Qwen2.5-VL (transformers layout) + tokenizer + image processor
    dit/                 diffusers `CosmosTransformer3DModel` layout; the connector is its `crossattn_proj.*`
    vae/                 diffusers `AutoencoderKLWan` layout
so each part also opens with its own library.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .chat import EncodedConversation, last_text_chunk_mask
from .config import DuoGenConfig
from .connector import stack_layers
from .dit import DuoGenDiT
from .errors import DuoGenInputError
from .flow import drop_last_text_chunk
from .mllm import DuoGenMLLM
from .vae import LatentCodec, load_codec, make_codec

CONFIG_NAME = "duogen_config.json"


class DuoGenPair(nn.Module):
    def __init__(self, config: DuoGenConfig, mllm: DuoGenMLLM, dit: DuoGenDiT, vae: LatentCodec) -> None:
        super().__init__()
        self.config = config
        self.mllm = mllm
        self.dit = dit
        self.vae = vae

    @classmethod
    def build(
        cls,
        config: DuoGenConfig,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DuoGenPair:
        """A new pair (fully offline): random weights, except parts that start from shipped pretrained ones
        (`config.mllm_init`, `config.dit_init`); the global RNG is left as it was. With `device` / `dtype`,
        the MLLM and DiT are created there in that dtype (a 7B model is never materialised in float32 on
        the CPU first); the VAE stays float32."""
        if device is not None or dtype is not None:
            previous = torch.get_default_dtype()
            torch.set_default_dtype(dtype or previous)
            try:
                with torch.device(device or "cpu"):
                    pair = cls.build(config, seed)
            finally:
                torch.set_default_dtype(previous)
            pair.vae.to(torch.float32)
            return pair
        if config.mllm_init is not None:
            from .pretrained import pretrained_mllm_dir

            mllm = DuoGenMLLM.from_pretrained(pretrained_mllm_dir(config.mllm_init, config.mllm), config.mllm)
        else:
            mllm = DuoGenMLLM.build(config.mllm, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            dit = DuoGenDiT(config.dit)
            vae = make_codec(config.vae)
        if config.dit_init is not None:
            from .pretrained import pretrained_dit_state

            dit.load_diffusers_state_dict(pretrained_dit_state(config.dit_init, config.dit))
        return cls(config, mllm, dit.eval(), vae.eval())

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path / CONFIG_NAME)
        self.mllm.save_pretrained(path / "mllm")
        self.dit.save_pretrained(path / "dit")
        self.vae.save_pretrained(path / "vae")

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> DuoGenPair:
        """Load a saved pair; with `device` / `dtype` it is placed for inference (see `place`)."""
        path = Path(path)
        if not (path / CONFIG_NAME).exists():
            raise DuoGenInputError(f"{path} is not a saved DuoGen pair: {CONFIG_NAME} is missing")
        config = DuoGenConfig.load(path / CONFIG_NAME)
        mllm = DuoGenMLLM.from_pretrained(path / "mllm", config.mllm)
        dit = DuoGenDiT.from_pretrained(path / "dit", config.dit)
        vae = load_codec(path / "vae", config.vae)
        pair = cls(config, mllm, dit.eval(), vae.eval())
        return pair.place(device, dtype) if device is not None or dtype is not None else pair

    def place(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> DuoGenPair:
        """Move the pair to `device`; the MLLM and the DiT take `dtype`, the VAE stays float32 so every
        picture is decoded at full precision (latents are cast where they cross over)."""
        device = torch.device(device or "cpu")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DuoGenInputError("--device cuda was asked for, but CUDA is not available on this machine")
        self.mllm.model.to(device=device, dtype=dtype)
        self.dit.to(device=device, dtype=dtype)
        self.vae.to(device=device)
        return self

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this: VAE compression x DiT patch."""
        return self.vae.compression * self.config.dit.patch_size[1]

    @property
    def max_image_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the largest picture the DiT draws or takes as a condition frame."""
        gh, gw = self.dit.max_grid
        return gw * self.pixel_multiple, gh * self.pixel_multiple

    def check_image_size(self, size: tuple[int, int], what: str) -> None:
        """A clear error for a picture larger than the DiT's positions (it would otherwise run out of memory
        or past its RoPE tables), named by `what` ("input image 2", "the requested size")."""
        m = self.pixel_multiple
        w, h = (max(m, round(side / m) * m) for side in size)
        mw, mh = self.max_image_size
        if w > mw or h > mh:
            raise DuoGenInputError(
                f"{what} is {size[0]}x{size[1]} px; this pair draws and conditions on pictures of at most "
                f"{mw}x{mh} px: send a smaller one"
            )

    def text_streams(
        self, encoded: EncodedConversation, upto: int, stream: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The DiT's text stream for an image whose `<BOV>` sits at `upto`, and its CFG negative.

        Stream: every decoder layer's hidden states of the tokens before `<BOV>`, each layer normalised and
        all concatenated (the connector's input). Negative: the same without the last text chunk.
        `stream` [>= upto, connector_in] can be passed when the caller already has the rows (the generation
        session keeps them); otherwise the MLLM runs over the tokens before `upto` only (causal: the rest of
        the conversation, later images too, cannot change them).
        """
        if stream is None:
            layer_states = self.mllm.layer_hidden_states(encoded.prefix(upto))
            stream = stack_layers(layer_states, eps=self.config.connector.norm_eps)
        stream = stream[:upto]
        negative = drop_last_text_chunk(stream, last_text_chunk_mask(encoded.chunk_ids, upto))
        return stream, negative
