"""The connector between MLLM and DiT: Cosmos-Predict-2.5's `crossattn_proj` recipe.

Each decoder layer's hidden states are normalised over channels (zero mean, unit std, as the Cosmos-Predict
2.5 pipeline does for its Qwen2.5-VL text encoder), all layers are concatenated on channels and a
Linear -> GELU maps them to the DiT's cross-attention width. Parameter names are diffusers' (`0.weight`,
`0.bias`), so inside the DiT this module *is* `crossattn_proj`.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ConnectorConfig


def stack_layers(layer_states: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[num_layers, L, W] -> [L, num_layers * W]: each layer normalised over channels, then concatenated."""
    x = layer_states.float()
    x = (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + eps)
    return x.permute(1, 0, 2).reshape(x.shape[1], -1).to(layer_states.dtype)


class Connector(nn.Sequential):
    """Linear(num_layers * W -> out) + GELU, applied to `stack_layers` output."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Linear(in_channels, out_channels, bias=True), nn.GELU())

    @classmethod
    def from_config(cls, cfg: ConnectorConfig) -> Connector:
        return cls(cfg.in_channels, cfg.out_channels)
