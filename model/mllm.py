"""DuoGen's MLLM: transformers' `Qwen2_5_VLForConditionalGeneration` plus the `<BOV>` token.

The wrapper owns the model, the tokenizer and the (torchvision-free) image processor, so one object encodes
a conversation in the one chat format (`chat.py`), runs it, and hands every decoder layer's hidden states to
the connector (Cosmos-Predict2.5 reads all layers). Sizes come from our `MLLMConfig`, not from transformers'
defaults: transformers 5.23's bare `Qwen2_5_VLConfig()` is the 72B text tower, not the 7B.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .chat import EncodedConversation, build_image_processor, encode_conversation
from .config import MLLMConfig, _from_dict
from .errors import CheckpointMismatchError
from .tokenizer import ENDOFTEXT, IM_END, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, build_tokenizer

DUOGEN_FILE = "duogen_mllm.json"  # our MLLMConfig (incl. DuoGen-only fields: bov_token, image cap, context)
TOKENS_PER_SECOND = 2  # Qwen2.5-VL-7B's video time scale; unused for images but part of the config


def hf_config(cfg: MLLMConfig, tokenizer=None) -> Qwen2_5_VLConfig:
    """Our dataclass as transformers' `Qwen2_5_VLConfig`; special token ids are looked up in `tokenizer`.

    mRoPE goes in `rope_parameters` (transformers 5 name; "mrope" is stored as rope_type "default" with an
    `mrope_section` key). Without `mrope_section` transformers silently falls back to (16, 24, 24).
    """
    tok = tokenizer if tokenizer is not None else build_tokenizer(cfg.bov_token, cfg.bpe_words)
    tid = tok.convert_tokens_to_ids
    text = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": list(cfg.mrope_section),
        },
        hidden_act="silu",
        use_sliding_window=False,
        max_window_layers=cfg.num_hidden_layers,
        bos_token_id=tid(ENDOFTEXT),
        eos_token_id=tid(IM_END),
        pad_token_id=tid(ENDOFTEXT),
    )
    vision = dict(
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_heads=cfg.vision_num_heads,
        patch_size=cfg.vision_patch_size,
        spatial_merge_size=cfg.vision_spatial_merge_size,
        temporal_patch_size=cfg.vision_temporal_patch_size,
        window_size=cfg.vision_window_size,
        fullatt_block_indexes=list(cfg.vision_fullatt_block_indexes),
        out_hidden_size=cfg.hidden_size,
        tokens_per_second=TOKENS_PER_SECOND,
        hidden_act="silu",
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tid(IMAGE_PAD),
        video_token_id=tid(VIDEO_PAD),
        vision_start_token_id=tid(VISION_START),
        vision_end_token_id=tid(VISION_END),
        tie_word_embeddings=cfg.tie_word_embeddings,
    )


def mllm_config_from_hf(hc: Qwen2_5_VLConfig, **duogen_fields: Any) -> MLLMConfig:
    """The inverse of `hf_config` (for a plain Qwen2.5-VL checkpoint without our JSON)."""
    t, v = hc.text_config, hc.vision_config
    rope = t.rope_parameters or {}
    return MLLMConfig(
        vocab_size=t.vocab_size,
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        max_position_embeddings=t.max_position_embeddings,
        rms_norm_eps=t.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", MLLMConfig.rope_theta)),
        mrope_section=tuple(rope.get("mrope_section", MLLMConfig.mrope_section)),
        tie_word_embeddings=bool(hc.tie_word_embeddings),
        vision_depth=v.depth,
        vision_hidden_size=v.hidden_size,
        vision_intermediate_size=v.intermediate_size,
        vision_num_heads=v.num_heads,
        vision_patch_size=v.patch_size,
        vision_spatial_merge_size=v.spatial_merge_size,
        vision_temporal_patch_size=v.temporal_patch_size,
        vision_window_size=v.window_size,
        vision_fullatt_block_indexes=tuple(v.fullatt_block_indexes),
        **duogen_fields,
    )


class DuoGenMLLM(torch.nn.Module):
    """Qwen2.5-VL + tokenizer + image processor, with `<BOV>` guaranteed to be in the vocabulary."""

    def __init__(
        self,
        cfg: MLLMConfig,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer,
        image_processor: Qwen2VLImageProcessorPil,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: MLLMConfig, seed: int = 0) -> DuoGenMLLM:
        """Random-init model, fully offline (tests, tiny preset); the global RNG is left untouched."""
        tokenizer = build_tokenizer(cfg.bov_token, cfg.bpe_words)
        if len(tokenizer) > cfg.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but vocab_size is {cfg.vocab_size}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(hf_config(cfg, tokenizer))
        self = cls(cfg, model.eval(), tokenizer, build_image_processor(cfg))
        self._init_bov_rows(self.bov_token_id)
        return self

    def add_bov_token(self) -> int:
        """Make sure `<BOV>` exists (e.g. in a stock Qwen checkpoint); returns its id.

        The new id gets an embedding row (and lm_head row, if untied) equal to the mean of the rows of the
        tokens the tokenizer already has: a random row would be out of distribution for the trained layers
        (and its logit arbitrary), while the mean sits in the middle of the embedding cloud and starts with an
        average logit. Qwen's padded spare rows are left out of the mean (they are untrained). The embedding
        is only resized when the id does not fit.
        """
        bov = self.cfg.bov_token
        if bov in self.tokenizer.get_vocab():
            return self.bov_token_id
        self.tokenizer.add_special_tokens({"extra_special_tokens": [bov]}, replace_extra_special_tokens=False)
        bov_id = self.bov_token_id
        rows = self.model.get_input_embeddings().num_embeddings
        if bov_id >= rows:
            self.model.resize_token_embeddings(bov_id + 1, mean_resizing=False)
            self.cfg = dataclasses.replace(self.cfg, vocab_size=bov_id + 1)
        self._init_bov_rows(bov_id)
        return bov_id

    @torch.no_grad()
    def _init_bov_rows(self, bov_id: int) -> None:
        embed = self.model.get_input_embeddings().weight
        known = sorted(i for i in self.tokenizer.get_vocab().values() if i != bov_id and i < embed.shape[0])
        index = torch.tensor(known, device=embed.device)
        embed[bov_id] = embed[index].float().mean(0).to(embed.dtype)
        head = self.model.get_output_embeddings().weight
        if head.data_ptr() != embed.data_ptr():
            head[bov_id] = head[index].float().mean(0).to(head.dtype)

    # ---- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Model (safetensors) + tokenizer + image processor + our config, loadable by `from_pretrained`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        (path / DUOGEN_FILE).write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2))

    @classmethod
    def from_pretrained(
        cls, path: str | Path, cfg: MLLMConfig | None = None, dtype: Any = None
    ) -> DuoGenMLLM:
        """Load our save or any Qwen2.5-VL checkpoint directory (adds `<BOV>` if the tokenizer lacks it).

        With `cfg` the network is built from it and the checkpoint must fit it exactly: a tensor of another
        shape raises `CheckpointMismatchError` naming the tensor. `dtype` goes to transformers' loader
        (e.g. `torch.bfloat16` or "auto"). The image processor is always the PIL one (no torchvision).
        """
        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        if cfg is None:
            config = Qwen2_5_VLConfig.from_pretrained(path)
            if (path / DUOGEN_FILE).exists():
                cfg = _from_dict(MLLMConfig, json.loads((path / DUOGEN_FILE).read_text()))
            else:
                cfg = mllm_config_from_hf(config)
        else:
            config = hf_config(cfg, tokenizer)
        kwargs: dict[str, Any] = {"config": config}
        if dtype is not None:
            kwargs["dtype"] = dtype
        # transformers 5.23 raises a bare RuntimeError ("look at the above report") on a size mismatch, so
        # load with mismatches allowed and turn its loading info into an error that names the tensors.
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        if info.get("mismatched_keys"):
            found = sorted(_describe(m) for m in info["mismatched_keys"])
            more = f" (and {len(found) - 6} more)" if len(found) > 6 else ""
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit the model: {'; '.join(found[:6])}" + more
            )
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise CheckpointMismatchError(f"checkpoint {path} lacks tensors: {missing[:8]}")
        self = cls(cfg, model.eval(), tokenizer, image_processor)
        self.add_bov_token()
        return self

    # ---- running -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def bov_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.cfg.bov_token)

    @property
    def im_end_token_id(self) -> int:
        """End of a turn: what generation stops on (Qwen's eos for chat)."""
        return self.tokenizer.convert_tokens_to_ids(IM_END)

    eos_token_id = im_end_token_id

    @property
    def num_layers(self) -> int:
        return self.cfg.num_hidden_layers

    def encode(
        self, conversation: Any, add_generation_prompt: bool = False, max_images: int | None = None
    ) -> EncodedConversation:
        """`chat.encode_conversation` with this model's tokenizer, processor, image cap and context."""
        return encode_conversation(
            conversation,
            self.tokenizer,
            self.image_processor,
            bov_token=self.cfg.bov_token,
            max_image_side=self.cfg.max_image_side,
            max_context=self.cfg.max_context,
            max_images=max_images,
            add_generation_prompt=add_generation_prompt,
        )

    def _inputs(self, encoded: EncodedConversation) -> dict[str, Any]:
        dev = self.device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in encoded.model_inputs().items()}

    def forward(
        self, encoded: EncodedConversation, with_loss: bool = False, **kwargs: Any
    ) -> CausalLMOutputWithPast:
        """One sequence through Qwen2.5-VL; `with_loss` adds the next-token loss on `encoded.labels`."""
        inputs = self._inputs(encoded)
        if with_loss:
            inputs["labels"] = encoded.labels[None].to(self.device)
        return self.model(**inputs, use_cache=False, **kwargs)

    def forward_logits(self, encoded: EncodedConversation) -> torch.Tensor:
        """Next-token logits [T, vocab] (row t predicts token t + 1)."""
        return self.forward(encoded).logits[0]

    def layer_hidden_states(self, encoded: EncodedConversation, positions: Any = None) -> torch.Tensor:
        """Output of every decoder layer [num_layers, P, hidden] at `positions` (default: all T).

        This is `hidden_states[1:]` of transformers' `output_hidden_states=True` (index 0 is the embeddings),
        what Cosmos-Predict2.5 feeds its connector; as in transformers, the last entry is after the final
        RMSNorm. Runs the base model only (no lm_head). Gradients follow the caller's grad mode.
        """
        out = self.model.model(**self._inputs(encoded), output_hidden_states=True, use_cache=False)
        hidden = torch.stack(out.hidden_states[1:], dim=0)[:, 0]
        if positions is not None:
            hidden = hidden[:, torch.as_tensor(positions, dtype=torch.long, device=hidden.device)]
        return hidden


def _describe(mismatch: Any) -> str:
    """One entry of transformers' `mismatched_keys` as "name: checkpoint shape vs model shape"."""
    if isinstance(mismatch, tuple | list) and len(mismatch) == 3:
        name, ckpt, model = mismatch
        return f"{name}: checkpoint {tuple(ckpt)} vs model {tuple(model)}"
    return str(mismatch)
