"""Headless Chromium for page tests: Debian's `chromium` driven by Playwright (no browser is downloaded),
started with the flags that keep it off the network on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    """A headless browser; a clear failure when chromium is missing (install.sh dev installs it)."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `bash scripts/install.sh dev` installs it"
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
