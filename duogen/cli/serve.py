"""`duogen serve`: the predictor server (KServe + OpenAI-style routes + chat page) on one machine."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a saved pair over HTTP: KServe V1/V2, /openai/v1 (responses, chat, images), /metrics, /ui/."""
    from duogen.components.serving.arguments import settings_from_args
    from duogen.components.serving.server import serve

    settings = settings_from_args(args)
    print(f"serving {settings.predictor.model} at http://{settings.host}:{settings.port}/ui/", flush=True)
    serve(settings)
    return 0


def add_serve(sub) -> None:
    from duogen.components.serving.arguments import add_arguments

    p = sub.add_parser(
        "serve",
        help="serve a saved pair over HTTP (OpenAI-compatible routes, chat page)",
        description=cmd_serve.__doc__,
    )
    add_arguments(p)
    p.set_defaults(func=cmd_serve)
