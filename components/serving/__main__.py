"""`python -m duogen.components.serving`: the InferenceService container's command (same flags as
`duogen serve`)."""

import argparse
import sys

from duogen.components.serving.arguments import add_arguments, settings_from_args
from duogen.components.serving.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duogen.components.serving", description=__doc__)
    add_arguments(parser)
    serve(settings_from_args(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
