#!/usr/bin/env bash
# Set up DuoGen in ./.venv with one resolve for the whole environment (constraints.txt pins torch to the
# CPU wheel; an unpinned torch would pull a multi-GB CUDA build). `scripts/install.sh dev` adds test tools.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "dev" ] && extras="[dev]"
python=${PYTHON:-python3}
# This machine kind keeps the CPU torch wheel on disk; PyPI's Linux torch wheel of the same version is CUDA.
links=()
[ -d /opt/wheels ] && links=(--find-links /opt/wheels)
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt "pip>=24"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt "${links[@]}" -e ".${extras}"
# PySceneDetect declares the GUI opencv-python, whose cv2 would replace the headless one: install it alone.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps scenedetect
# The Open Responses compliance suite (TypeScript) runs on the machine's Node.js with the pinned zod and tsx.
if [ "${1:-}" = "dev" ]; then
  if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tests/openresponses_compliance --omit=dev --no-audit --no-fund --loglevel=error
  else
    echo "install.sh: Node.js/npm is missing (the Open Responses compliance test needs it)" >&2
  fi
fi
# The chat page test drives Debian's chromium (Playwright never downloads a browser here).
if [ "${1:-}" = "dev" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "install.sh: Debian's chromium is missing (the chat page test needs it): apt-get install chromium" >&2
  fi
fi
