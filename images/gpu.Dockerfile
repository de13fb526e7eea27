# syntax=docker/dockerfile:1
# DuoGen on GPUs: training (PyTorchJob pods) and GPU serving. Build from the repository root:
#   docker build -f images/gpu.Dockerfile -t duogen-gpu:0.1.0 .
# The NGC PyTorch image brings CUDA torch, Transformer Engine, Apex, NCCL and DALI built together; they stay
# as NVIDIA built them: their pins are left out of constraints.txt and of the requirements
# (images/base_requirements.py), everything else is pinned by constraints.txt. The base image's own
# PIP_CONSTRAINT stays in force, so a pin of ours that contradicts NVIDIA's fails the build, naming it, and
# images/check_gpu_stack.py fails it when torch, TE, Apex, DALI, megatron-core and DuoGen do not import
# together (or torch is no longer NVIDIA's CUDA build).
# Not built on the development machines (no Docker engine there): tests/test_images.py checks it against
# what the chart and the manifests run.
ARG BASE=nvcr.io/nvidia/pytorch:25.10-py3
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /opt/duogen
COPY pyproject.toml constraints.txt README.md ./
COPY images/base_requirements.py images/check_gpu_stack.py ./images/
COPY duogen ./duogen
COPY model ./model
COPY components ./components
COPY platform ./platform
RUN python images/base_requirements.py requirements --provided torch nvidia- transformer-engine apex > /tmp/requirements.txt \
 && python images/base_requirements.py constraints --provided torch nvidia- transformer-engine apex > /tmp/constraints.txt \
 && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt \
 && pip install -c /tmp/constraints.txt --no-deps scenedetect \
 && pip install --no-deps . \
 && python images/check_gpu_stack.py \
 && rm /tmp/requirements.txt /tmp/constraints.txt \
 && useradd --uid 10001 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin duogen

USER 10001
EXPOSE 8080
CMD ["duogen", "serve", "--host", "0.0.0.0", "--port", "8080", "--device", "cuda", "--dtype", "bfloat16"]
