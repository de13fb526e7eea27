"""One GPU check: does this node train and serve the production pair, and how fast (`duogen doctor gpu`).

It measures, each on random weights in bf16 on `cuda`: Stage-2 training steps of the production DiT on
packed 768x768 images with a condition frame (tokens/s, MFU), the same with Transformer Engine FP8 where TE
imports (speedup over bf16), Stage-1 training steps of the production Qwen2.5-VL-7B language stack at
sequence 4096 (all 28 layers when they fit, else the most that do, stated), one 768x768 image at 35 steps
with CFG through the whole pair (seconds), and single-stream decode tokens/s against the memory-bandwidth
ceiling. Peaks come from a table of known GPUs, or are measured (a bf16 matmul and a device copy).

FLOPs are counted as Megatron/PaLM do, per trained token: 6 x parameters (forward + backward), plus
attention: 12 x layers x width x context, the causal LLM counting half its context; the DiT adds its
cross-attention over the text stream, and its connector's 6 x parameters per text token. MFU = achieved /
peak dense FLOPs of the dtype.

UNTESTED ON GPU in this repository's CI (no CI machine has one): the arithmetic, the peak lookup and the
refusal without CUDA are tested on CPU, and every measuring function takes a config and a device, so the tests
also run each one on the CPU with the tiny preset. The figures in the README say where they were measured.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from duogen.model.config import DiTConfig, DuoGenConfig, FlowConfig, MLLMConfig

GOALS = {  # what users compare against (README "Performance")
    "stage1_mfu": 0.45,
    "fp8_speedup": 1.3,
    "stage2_mfu": 0.35,
    "image_seconds": 5.0,
    "decode_fraction_of_ceiling": 0.70,
}


@dataclass(frozen=True)
class Peak:
    name: str
    bf16_tflops: float  # dense
    fp8_tflops: float | None  # dense; None where the GPU has no FP8 tensor cores
    memory_tb_s: float
    source: str = "table"  # or "measured"


# Dense tensor-core peaks from the vendor data sheets; matched against `torch.cuda.get_device_name()` in order
# (the most specific name first).
KNOWN_GPUS: tuple[tuple[str, Peak], ...] = (
    ("H200", Peak("H200", 989.4, 1978.9, 4.8)),
    ("H100 NVL", Peak("H100 NVL", 835.0, 1670.0, 3.9)),
    ("H100 PCIe", Peak("H100 PCIe", 756.5, 1513.0, 2.0)),
    ("H100", Peak("H100 SXM", 989.4, 1978.9, 3.35)),
    ("B200", Peak("B200", 2250.0, 4500.0, 8.0)),
    ("A100-SXM4-40GB", Peak("A100 SXM 40GB", 312.0, None, 1.555)),
    ("A100 80GB PCIe", Peak("A100 PCIe 80GB", 312.0, None, 1.935)),
    ("A100", Peak("A100 SXM 80GB", 312.0, None, 2.039)),
    ("L40S", Peak("L40S", 362.05, 733.0, 0.864)),
    ("L4", Peak("L4", 121.0, 242.5, 0.3)),
)


class NoGPU(RuntimeError):
    pass


def known_peak(device_name: str) -> Peak | None:
    for pattern, peak in KNOWN_GPUS:
        if pattern.lower() in device_name.lower():
            return peak
    return None


def measure_peak(device: torch.device, name: str = "unknown GPU") -> Peak:
    """A peak for a GPU the table lacks: the best of a few 8192^3 bf16 matmuls and of 1 GiB device copies."""
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    flops = timed(lambda: a @ b, device, repeats=5)
    src = torch.empty(1 << 29, dtype=torch.int16, device=device)
    dst = torch.empty_like(src)
    copy = timed(lambda: dst.copy_(src), device, repeats=5)
    return Peak(name, 2 * n**3 / flops / 1e12, None, 2 * src.numel() * 2 / copy / 1e12, "measured")


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """The best wall time of `fn` over `repeats` runs, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- FLOP arithmetic ----------------------------------------------------------------------------------------
def transformer_train_flops(
    params: int, layers: int, width: int, context: int, tokens: int, causal: bool
) -> float:
    """Forward + backward FLOPs of `tokens` tokens through a transformer with `params` (non-embedding)
    parameters: 6 N per token plus attention's 12 L d S (S = context, halved for a causal model)."""
    attention_context = context / 2 if causal else context
    return tokens * (6 * params + 12 * layers * width * attention_context)


def dit_train_flops(cfg: DiTConfig, image_tokens_per_sample: int, samples: int, text_tokens: int) -> float:
    """One Stage-2 step of the DiT on `samples` packed samples of `image_tokens_per_sample` tokens each
    (condition frames included: they go through forward and backward too), with a text stream of
    `text_tokens` per sample, the connector trained with it."""
    width = cfg.num_attention_heads * cfg.attention_head_dim
    blocks = dit_block_params(cfg)
    tokens = image_tokens_per_sample * samples
    self_attention = transformer_train_flops(
        blocks, cfg.num_layers, width, image_tokens_per_sample, tokens, False
    )
    cross_attention = tokens * 12 * cfg.num_layers * width * text_tokens
    connector = (
        6 * (cfg.crossattn_proj_in_channels + 1) * cfg.encoder_hidden_states_channels * text_tokens * samples
    )
    return self_attention + cross_attention + connector


def dit_block_params(cfg: DiTConfig) -> int:
    """Parameters of the DiT without its connector (counted from the module, so it cannot drift)."""
    from duogen.model.dit import DuoGenDiT

    with torch.device("meta"):
        dit = DuoGenDiT(cfg)
    total = sum(p.numel() for p in dit.parameters())
    connector = sum(p.numel() for p in dit.crossattn_proj.parameters()) if cfg.use_crossattn_projection else 0
    return total - connector


def mllm_layer_params(cfg: MLLMConfig, layers: int) -> int:
    """Non-embedding parameters of `layers` decoder layers of the language stack (GQA, SwiGLU)."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    head = d // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * head
    attention = d * d + d + 2 * (d * kv + kv) + d * d  # q (bias), k and v (bias), o
    return layers * (attention + 3 * d * f + 2 * d)


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    return flops / seconds / (peak_tflops * 1e12)


def decode_ceiling(weight_bytes: float, memory_tb_s: float) -> float:
    """Tokens/s of single-stream decode if every weight is read once per token at full bandwidth."""
    return memory_tb_s * 1e12 / weight_bytes


# --- measurements (any device: the tests run them on CPU with the tiny preset) ------------------------------
def measure_dit_training(
    cfg: DiTConfig,
    device: torch.device,
    dtype: torch.dtype,
    latent_hw: tuple[int, int],
    samples: int = 2,
    text_tokens: int = 256,
    steps: int = 5,
    fp8: str | None = None,
    flow: FlowConfig | None = None,
) -> dict[str, float]:
    """Stage-2 steps (flow-matching loss, AdamW) of a fresh DiT on `samples` packed samples, each a clean
    condition frame + a noisy target of `latent_hw`; returns tokens/s, seconds per step and FLOPs per step."""
    from duogen.model.dit import DuoGenDiT
    from duogen.model.flow import TrainingExample, flow_matching_loss

    with torch.device(device):
        dit = DuoGenDiT(cfg).to(dtype)
    if fp8:
        from .parallelize import parallelize_dit

        parallelize_dit(dit, 1, fp8=fp8)
    optimizer = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    examples = [
        TrainingExample(
            [torch.randn(cfg.out_channels, *latent_hw, device=device, dtype=dtype) for _ in range(2)],
            1,
            torch.randn(text_tokens, cfg.crossattn_proj_in_channels, device=device, dtype=dtype),
        )
        for _ in range(samples)
    ]
    flow = flow or FlowConfig()
    generator = torch.Generator().manual_seed(0)

    def step():
        from .fp8 import fp8_autocast

        optimizer.zero_grad(set_to_none=True)
        with fp8_autocast(dit):
            loss = flow_matching_loss(dit, examples, flow, generator)
        loss.backward()
        optimizer.step()

    seconds = timed(step, device, repeats=steps, warmup=2)
    ph, pw = cfg.patch_size[1:]
    per_sample = 2 * (latent_hw[0] // ph) * (latent_hw[1] // pw)
    flops = dit_train_flops(cfg, per_sample, samples, text_tokens)
    return {"tokens_per_s": per_sample * samples / seconds, "step_seconds": seconds, "flops_per_step": flops}


def language_stack(cfg: MLLMConfig, layers: int, device: torch.device, dtype: torch.dtype):
    """The MLLM's decoder (transformers' Qwen2.5-VL text model + lm_head) with `layers` layers, on device."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from duogen.model.mllm import hf_config

    config = hf_config(dataclasses.replace(cfg, num_hidden_layers=layers))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.model.visual.requires_grad_(False)  # text-only steps: the vision tower is not in the measure
    return model


def measure_mllm_training(
    cfg: MLLMConfig, layers: int, device: torch.device, dtype: torch.dtype, seq: int = 4096, steps: int = 3
) -> dict[str, float]:
    """Stage-1 steps (next-token loss, AdamW, activation checkpointing) of `layers` layers at `seq`."""
    model = language_stack(cfg, layers, device, dtype)
    model.gradient_checkpointing_enable()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, cfg.vocab_size, (1, seq), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()

    seconds = timed(step, device, repeats=steps, warmup=1)
    lm_params = mllm_layer_params(cfg, layers) + cfg.hidden_size * cfg.vocab_size  # + lm_head
    flops = transformer_train_flops(lm_params, layers, cfg.hidden_size, seq, seq, causal=True)
    return {"tokens_per_s": seq / seconds, "step_seconds": seconds, "flops_per_step": flops, "layers": layers}


def measure_decode(
    cfg: MLLMConfig, device: torch.device, dtype: torch.dtype, prompt: int = 512, tokens: int = 64
) -> dict[str, float]:
    """Single-stream greedy decode with the KV cache through the whole language stack: tokens/s, and the
    bytes of weights each token reads (for the bandwidth ceiling)."""
    from transformers import DynamicCache

    model = language_stack(cfg, cfg.num_hidden_layers, device, dtype).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, prompt), device=device)

    @torch.no_grad()
    def run():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(tokens):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        return time.perf_counter() - start

    run()  # warm-up
    seconds = min(run() for _ in range(2))
    # every weight a token reads: the decoder and lm_head, not the vision tower nor the embedding table
    # (one row of it per token)
    language = [
        p for n, p in model.named_parameters() if ".visual." not in f".{n}" and "embed_tokens" not in n
    ]
    weight_bytes = sum(p.numel() * p.element_size() for p in language)
    return {"tokens_per_s": tokens / seconds, "weight_bytes": weight_bytes}


def measure_image(
    config: DuoGenConfig, device: torch.device, dtype: torch.dtype, size: int = 768, steps: int = 35
) -> dict[str, float]:
    """Seconds for one `size` x `size` picture through the whole pair (MLLM to <BOV>, the DiT with CFG at
    `steps` steps, VAE decode), from a short prompt, on fresh random weights."""
    from duogen.model.generate import GenerationOptions, ImageDone, generate
    from duogen.model.pair import DuoGenPair

    pair = DuoGenPair.build(config, seed=0, device=device, dtype=dtype)
    options = GenerationOptions(
        max_new_tokens=1, max_images=1, force_bov=True, image_size=(size, size), num_inference_steps=steps,
        guidance_scale=config.flow.guidance_scale or 5.0,
    )  # fmt: skip
    prompt = [{"role": "user", "content": "Draw the first step."}]

    def draw():
        for event in generate(pair, prompt, options):
            if isinstance(event, ImageDone):
                return event.image
        raise RuntimeError("no picture was drawn")

    seconds = timed(draw, device, repeats=2, warmup=1)
    return {"seconds": seconds, "size": size, "steps": steps}


def transformer_engine_available() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except (ImportError, RuntimeError, OSError):  # the CPU core wheel raises RuntimeError at import
        return False
    return True


def run_gpu_check(stage1_layers: int | None = None, quick: bool = False, log=print) -> dict:
    """The whole check on this node's first GPU; one JSON-ready dict. Raises NoGPU without CUDA."""
    if not torch.cuda.is_available():
        raise NoGPU(
            "no CUDA device is visible (torch.cuda.is_available() is False): run this on a GPU node, in the "
            "GPU image (images/gpu.Dockerfile)"
        )
    from duogen.model.presets import production

    device = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name(device)
    peak = known_peak(name) or measure_peak(device, name)
    config = production()
    bf16 = torch.bfloat16
    result: dict = {
        "check": "gpu",
        "device": name,
        "peak": dataclasses.asdict(peak),
        "torch": torch.__version__,
        "transformer_engine": transformer_engine_available(),
    }
    latent = 768 // 8  # the Wan VAE compresses 8x spatially
    steps = 2 if quick else 5
    log("stage 2: production DiT, packed 768x768 samples with a condition frame, bf16")
    s2 = measure_dit_training(config.dit, device, bf16, (latent, latent), samples=2, steps=steps)
    result["stage2_tokens_per_s"] = round(s2["tokens_per_s"])
    result["stage2_mfu"] = round(mfu(s2["flops_per_step"], s2["step_seconds"], peak.bf16_tflops), 4)
    torch.cuda.empty_cache()
    if result["transformer_engine"]:
        log("stage 2 with Transformer Engine FP8 (delayed scaling)")
        f8 = measure_dit_training(
            config.dit, device, bf16, (latent, latent), samples=2, steps=steps, fp8="delayed"
        )
        result["stage2_fp8_tokens_per_s"] = round(f8["tokens_per_s"])
        result["fp8_speedup"] = round(f8["tokens_per_s"] / s2["tokens_per_s"], 3)
        torch.cuda.empty_cache()
    else:
        result["fp8_speedup"] = None  # Transformer Engine does not import here: FP8 not measured
    layers = stage1_layers or config.mllm.num_hidden_layers
    while True:
        log(f"stage 1: Qwen2.5-VL-7B language stack, {layers} layers, sequence 4096, bf16")
        try:
            s1 = measure_mllm_training(config.mllm, layers, device, bf16, seq=4096, steps=2 if quick else 3)
            break
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if stage1_layers or layers == 1:
                raise
            layers //= 2  # all layers do not fit with AdamW states: the most that do, stated
    result["stage1_layers"] = layers
    result["stage1_tokens_per_s"] = round(s1["tokens_per_s"])
    result["stage1_mfu"] = round(mfu(s1["flops_per_step"], s1["step_seconds"], peak.bf16_tflops), 4)
    torch.cuda.empty_cache()
    log("one 768x768 picture, 35 steps with CFG, through the whole pair")
    image = measure_image(config, device, bf16, size=768, steps=35)
    result["image_768_seconds"] = round(image["seconds"], 3)
    torch.cuda.empty_cache()
    log("single-stream decode")
    decode = measure_decode(config.mllm, device, bf16)
    ceiling = decode_ceiling(decode["weight_bytes"], peak.memory_tb_s)
    result["decode_tokens_per_s"] = round(decode["tokens_per_s"], 1)
    result["decode_ceiling_tokens_per_s"] = round(ceiling, 1)
    result["decode_fraction_of_ceiling"] = round(decode["tokens_per_s"] / ceiling, 4)
    result["goals"] = GOALS
    result["meets"] = meets(result)
    return result


def meets(result: dict) -> dict[str, bool | None]:
    """Each goal: met, missed, or None where it was not measured."""
    image = result.get("image_768_seconds")
    out = {name: None if result.get(name) is None else result[name] >= goal for name, goal in GOALS.items()}
    out["image_seconds"] = None if image is None else image <= GOALS["image_seconds"]
    return out
