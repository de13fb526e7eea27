"""`python -m duogen.cli ...`: what torchrun's processes (and a PyTorchJob's pods) run."""

import sys

from duogen.cli import main

sys.exit(main())
