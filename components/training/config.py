"""Training configuration: one dataclass, read from a JSON or TOML file, with `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duogen.platform.key_value import split_items

from . import stages


@dataclass
class TrainConfig:
    stage: str = "stage2"  # a spec in stages/: "stage1" (the MLLM) or "stage2" (connector + DiT, MLLM frozen)
    model: str = "tiny"  # a preset name (fresh weights) or a saved pair directory
    shards: list[str] = field(default_factory=list)  # shard files or folders
    mix: dict[str, float] = field(default_factory=dict)  # weight per sample source ({}: as found)
    out: str = "outputs/train"
    steps: int = 100
    batch_size: int = 4  # examples per micro-batch, on each data-parallel rank
    grad_accum: int = 1
    # stage 2: DiT tokens (all frames, condition + target) per pack; a step's batch_size * grad_accum examples
    # are packed in order into as many forward/backward passes as the budget needs (None: grad_accum packs)
    token_budget: int | None = None
    lr: float = 1e-3
    # stage 2: the DiT's own layers train at lr x this, its connector (`crossattn_proj`) at lr (0: the
    # connector alone). Below 1, a pretrained DiT keeps what it can draw while the connector learns the new
    # MLLM's hidden states.
    dit_lr_ratio: float = 1.0
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    text_dropout: float = 0.1  # stage 2, for CFG
    ema: float | None = None  # decay of an EMA of the trained module (exported in its place)
    activation_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 50
    stop_at: int | None = None  # end this run after this step as a preemption would (a rerun resumes)
    checkpoint_dir: str | None = None  # a folder or s3://bucket/prefix; default: `out`/checkpoints
    tp: int = 1  # tensor-parallel size (ranks per TP group); data parallel over world size / tp
    fp8: str | None = None  # Transformer Engine FP8 recipe name ("delayed", "current", ...); GPU only
    tracking_uri: str | None = None  # MLflow; default: a sqlite file in `out`
    experiment: str = "duogen"
    pipeline_run_id: str | None = None
    export_uri: str | None = None  # also publish the exported model here (s3://...; a pod's disk is lost)
    result_uri: str | None = None  # where rank 0 writes the run's result (JSON); default: `out`/result.json
    image_decoder: str = (
        "auto"  # "dali" (nvJPEG on the rank's GPU; CPU operators here), "pil"; auto: DALI on GPU
    )

    def __post_init__(self) -> None:
        if self.stage not in stages.names():
            raise ValueError(f"stage must be one of {', '.join(stages.names())}, got {self.stage!r}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be at least 1")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"token_budget must be at least 1 token, got {self.token_budget}")
        if not self.dit_lr_ratio >= 0:
            raise ValueError(f"dit_lr_ratio must be 0 or more, got {self.dit_lr_ratio}")
        if self.tp < 1:
            raise ValueError(f"tp (tensor-parallel size) must be at least 1, got {self.tp}")
        if self.image_decoder not in ("auto", "dali", "pil"):
            raise ValueError(f"image_decoder must be 'auto', 'dali' or 'pil', got {self.image_decoder!r}")
        if self.fp8 is not None:
            from .fp8 import FP8_RECIPES

            if self.fp8 not in FP8_RECIPES:
                raise ValueError(f"unknown fp8 recipe {self.fp8!r}; choose one of {', '.join(FP8_RECIPES)}")

    @property
    def result(self) -> str:
        """Where rank 0 writes the run's result (`summary`): what a launcher reads back, from any pod."""
        return self.result_uri or str(Path(self.out) / "result.json")

    @property
    def checkpoints(self) -> str:
        """Where checkpoints go: `checkpoint_dir`, or `out`/checkpoints."""
        return self.checkpoint_dir or str(Path(self.out) / "checkpoints")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def overrides(self) -> list[str]:
        """The whole config as `key=value` overrides that `load_config(None, ...)` reads back unchanged
        (what a pod's `duogen train --set ...` command carries)."""
        return [
            f"{k}={v if isinstance(v, str) else json.dumps(v)}"
            for k, v in self.to_dict().items()
            if v is not None
        ]


def _coerce(name: str, raw: str) -> Any:
    default = TrainConfig.__dataclass_fields__[name].type
    text = str(default)
    if text.startswith(("list", "dict")) or raw.startswith(("[", "{")):
        return json.loads(raw)
    if raw.lower() in ("none", "null"):
        return None
    if "bool" in text:
        return raw.lower() in ("1", "true", "yes")
    if "int" in text and "float" not in text:
        return int(raw)
    if "float" in text:
        return float(raw)
    return raw


# The sections of a config file (TOML tables) and the fields each holds; a file may also give fields at the
# top level. A field under the wrong table is an error that names the right one.
SECTIONS = {
    "training": ("steps", "batch_size", "grad_accum", "token_budget", "seed", "stop_at"),
    "optimizer": ("lr", "dit_lr_ratio", "min_lr_ratio", "warmup_steps", "weight_decay", "grad_clip", "ema"),
    "data": ("shards", "mix", "text_dropout", "image_decoder"),
    "parallelism": ("tp", "fp8", "activation_checkpointing"),
    "checkpoint": ("ckpt_every", "checkpoint_dir"),
    "metrics": ("log_every", "tracking_uri", "experiment", "pipeline_run_id"),
    "paths": ("out", "export_uri", "result_uri"),
}
RECIPES = Path(__file__).parent / "recipes"


def flatten(data: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """A config file's tables folded into fields (`[optimizer] lr = ...` -> lr)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for field_name, item in value.items():
                if field_name not in SECTIONS[key]:
                    home = next((s for s, names in SECTIONS.items() if field_name in names), None)
                    hint = f" (it belongs in [{home}])" if home else ""
                    raise ValueError(f"{where}: [{key}] has no field {field_name!r}{hint}")
                out[field_name] = item
        else:
            out[key] = value
    return out


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    return flatten(tomllib.loads(text) if path.suffix == ".toml" else json.loads(text), str(path))


def recipe(stage: str) -> dict[str, Any]:
    """A stage's recipe (`recipes/STAGE.toml`, in the package) as fields; the draw over the sources is the
    stage's default (Stage 2: the curation registry's shares) unless the recipe says otherwise."""
    spec = stages.get(stage)
    data = _read(RECIPES / f"{stage}.toml")
    if "mix" not in data and (mix := spec.default_mix()):
        data["mix"] = mix
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), stage: str | None = None
) -> TrainConfig:
    """The stage's recipe (with `stage`), then a config file (.json or .toml, flat or in SECTIONS), then
    `key=value` overrides; unknown keys are named."""
    data: dict[str, Any] = recipe(stage) if stage else {}
    if path is not None:
        data |= _read(Path(path))
    fields = TrainConfig.__dataclass_fields__
    unknown = sorted(set(data) - set(fields))
    for key, value in split_items(overrides, "override", "key", "value"):
        if key not in fields:
            unknown.append(key)
            continue
        data[key] = _coerce(key, value)
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; known: {sorted(fields)}")
    if stage and data.get("stage", stage) != stage:
        raise ValueError(f"the config is for {data['stage']!r}, not {stage!r}")
    return TrainConfig(**data)
