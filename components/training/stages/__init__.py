"""Training stages as specs: everything that differs between stages, so the training loop knows none.

The shape is torchtitan's `TrainSpec` (torchtitan/protocols/train_spec.py): a stage names its trainable
module, how a curated sample becomes an example, its loss, its parameter groups and how its module is
parallelized; `loop.Trainer` runs any spec. Each module of this package that defines `SPEC` is a stage
`duogen train` offers (its recipe is `recipes/NAME.toml`), so adding a stage is one new file here and its
recipe. Pretraining's specs are these with another example source (`pretrain.pretraining_spec`).

Importing this package stays light (no torch): configs and the CLI list the stages without loading a model.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from duogen.components.curation.sample import Sample
    from duogen.model.pair import DuoGenPair

    from ..config import TrainConfig


def _all_sources(source: str) -> bool:
    return True


def _no_mix() -> dict[str, float]:
    return {}


@dataclass(frozen=True)
class StageSpec:
    name: str
    # the module the optimizer trains (everything else in the pair is frozen, in eval mode)
    trainable: Callable[[DuoGenPair], nn.Module]
    # the pair with its trainable part replaced by another module of the same config (export after TP)
    with_trainable: Callable[[DuoGenPair, nn.Module], DuoGenPair]
    # example(pair, sample, images, rng, text_dropout, decode): one training example (None: unusable)
    example: Callable[..., Any]
    # loss(pair) -> module whose forward(examples, generator) is a micro-batch's mean loss (DDP wraps it)
    loss: Callable[[DuoGenPair], nn.Module]
    # parallelize(trainable, tp, fp8): tensor parallel / Transformer Engine layers, in place
    parallelize: Callable[[nn.Module, int, str | None], Any]
    # activation_checkpointing(pair): turn it on for the trainable part
    activation_checkpointing: Callable[[DuoGenPair], None]
    # param_groups(trainable, cfg): the optimizer's groups
    param_groups: Callable[[nn.Module, TrainConfig], list[dict]]
    # keeps(sample): which curated samples the stage trains on
    keeps: Callable[[Sample], bool] = lambda sample: True
    # reads(source): which curated sources (components/curation/registry.py) a pipeline gives the stage
    reads: Callable[[str], bool] = _all_sources
    # the sources' shares of the draw when neither recipe nor config names them ({}: as found)
    default_mix: Callable[[], dict[str, float]] = _no_mix
    # pack(examples, token_budget, pair) -> micro-batches of at most that many tokens (None: no packing)
    pack: Callable[[list, int, DuoGenPair], list[list]] | None = None
    # examples(pair) -> source(position) -> example: a generated source in place of the shards
    examples: Callable[[DuoGenPair], Callable[[int], Any]] | None = None


@cache
def names() -> tuple[str, ...]:
    """The stages `duogen train` offers: this package's public modules."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def get(name: str) -> StageSpec:
    if name not in names():
        raise ValueError(f"stage must be one of {', '.join(names())}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}").SPEC
