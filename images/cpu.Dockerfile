# syntax=docker/dockerfile:1
# DuoGen on CPU: the tests, curation, the pipeline's light steps, the MLflow server (the chart runs it here)
# and CPU serving. Build from the repository root:  docker build -f images/cpu.Dockerfile -t duogen:0.1.0 .
# Versions come from constraints.txt (the same resolve as scripts/install.sh). Not built on the development
# machines (no Docker engine there): tests/test_images.py checks it against what the chart runs.
FROM python:3.11-slim-bookworm

ARG EXTRAS=server
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /opt/duogen
COPY pyproject.toml constraints.txt README.md ./
COPY duogen ./duogen
COPY model ./model
COPY components ./components
COPY platform ./platform
# torch from PyTorch's CPU index (PyPI's Linux wheel of the same version is the multi-GB CUDA build); then
# the package with every other pin from constraints.txt; PySceneDetect alone, --no-deps (it declares the GUI
# opencv-python, which would replace the headless one), as scripts/install.sh does.
RUN pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu torch \
 && pip install -c constraints.txt ".[${EXTRAS}]" \
 && pip install -c constraints.txt --no-deps scenedetect \
 && python -c "import duogen.cli, duogen.components.serving.server, mlflow, psycopg2" \
 && useradd --uid 10001 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin duogen

# The chart mounts /tmp (HOME, caches) as an emptyDir under a read-only root; KServe mounts /mnt/models.
USER 10001
EXPOSE 8080 5000
CMD ["duogen", "serve", "--host", "0.0.0.0", "--port", "8080"]
