"""The KFP v2 pipeline (`pipeline.py`) and its lightweight components, one file per step.

An entry point (DESIGN.md §2): each component parses its parameters and calls one library function; its
outputs are URIs in the pipeline's storage root (shards, checkpoints, the exported pair, reports), never
copies through the KFP launcher. Component bodies import inside themselves: KFP ships a lightweight
component's function source alone to the task's container, where the `duogen` package is installed.
"""

# The image every step runs in (images/cpu.Dockerfile; the training steps launch GPU images of their own).
IMAGE = "ghcr.io/duogen/duogen:0.1.0"
