"""DuoGen: interleaved text-and-image generation (MLLM + packed video DiT) and the platform around it."""

__version__ = "0.1.0"
