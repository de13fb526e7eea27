"""The server's command-line options (`duogen serve`, also the InferenceService container's command)."""

from __future__ import annotations

import argparse

# The predictor's dtypes by name (`predictor.DTYPES`). The settings classes are imported when the flags are
# read, not here: building the `duogen` parser must not import torch and transformers (seconds per command).
DTYPE_NAMES = ("bfloat16", "float16", "float32")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="/mnt/models",
        help="the pair: a folder, KServe's /mnt/models, s3://bucket/prefix, or models:/NAME@ALIAS "
        "(MLflow; resolved to its artifact location) (default: /mnt/models)",
    )
    p.add_argument("--name", default="duogen", help="model name in the routes (default: duogen)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 in a pod)"
    )
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument(
        "--dtype", choices=DTYPE_NAMES, default="float32", help="MLLM and DiT dtype (default: float32)"
    )
    p.add_argument("--max-running", type=int, default=8, help="requests generating at once (default: 8)")
    p.add_argument("--max-queued", type=int, default=32, help="requests waiting before 429 (default: 32)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default: 300)")
    p.add_argument("--no-batching", action="store_true", help="one request's step per DiT forward")
    p.add_argument(
        "--no-decode-batching",
        action="store_true",
        help="each request runs its own MLLM forwards in its worker thread (no batched decode)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=1024, help="most output tokens a request may ask for"
    )
    p.add_argument(
        "--max-image-side", type=int, default=512, help="largest side of a drawn picture (default: 512)"
    )
    p.add_argument("--max-input-images", type=int, default=8, help="images per request (default: 8)")
    p.add_argument("--max-image-bytes", type=int, default=8 * 1024 * 1024, help="bytes per input image")
    p.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024, help="request body cap")
    p.add_argument(
        "--allow-image-host",
        action="append",
        default=[],
        help="a host (or host:port) input images may be fetched from over http(s); repeatable",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=0.0,
        help="serving models:/NAME@ALIAS: check every this many seconds whether the alias moved and swap "
        "the new version in (default: 0, never)",
    )
    p.add_argument(
        "--response-store",
        default=None,
        help="where Responses are kept for previous_response_id and GET/DELETE /responses/{id}: a folder or "
        "s3://bucket/prefix that every replica shares; 'none' keeps nothing (default: a temporary folder "
        "of this process)",
    )
    p.add_argument(
        "--response-ttl",
        type=float,
        default=24.0,
        help="hours a stored response is kept (default: 24)",
    )
    p.add_argument(
        "--auth-token-file",
        default=None,
        help="require 'Authorization: Bearer <token>' with the token in this file (a mounted Secret); "
        "DUOGEN_AUTH_TOKEN works too (default: no auth)",
    )


def settings_from_args(args: argparse.Namespace):
    """The server's settings (a `server.ServeSettings`) from the parsed flags."""
    from .engine import EngineSettings
    from .inputs import ImageLimits
    from .predictor import PredictorSettings
    from .server import ServeSettings, read_token

    predictor = PredictorSettings(
        model=args.model,
        name=args.name,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        max_image_side=args.max_image_side,
        reload_interval=args.reload_interval,
        engine=EngineSettings(
            max_running=args.max_running,
            max_queued=args.max_queued,
            timeout_s=args.timeout,
            batching=not args.no_batching,
            decode_batching=not args.no_decode_batching,
        ),
        limits=ImageLimits(
            max_bytes=args.max_image_bytes,
            max_images=args.max_input_images,
            url_allow_list=tuple(args.allow_image_host),
        ),
    )
    return ServeSettings(
        host=args.host,
        port=args.port,
        auth_token=read_token(args.auth_token_file),
        max_body_bytes=args.max_body_bytes,
        predictor=predictor,
        response_store=args.response_store,
        response_ttl_s=args.response_ttl * 3600,
    )
