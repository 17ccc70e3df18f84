# syntax=docker/dockerfile:1
# Serving image for the Helm chart in helm/recsys-triton.
#
# Base: NGC Triton 24.10 = Triton Inference Server 2.51.0, the server version the
# nvidia-pytriton 0.7.0 wheel bundles for local runs and tests, plus the native backends
# (pytorch_libtorch, onnxruntime, ...) that wheel lacks. The project needs Python 3.11 and the
# NGC image ships 3.10, so the image adds Python 3.11 and swaps in the Python-backend stub built
# for 3.11 that nvidia-pytriton 0.7.0 carries (same Triton release, same stub protocol).
#
# The model repository is not baked in: the chart mounts it at /models (PVC or an
# initContainer-fetched archive) or passes a cloud URI, and runs `tritonserver` with the args of
# serving.server_args.build_server_args.
#
#   docker build -t registry.example.com/recsys/recsys-triton:0.1.0 .
#   docker run --rm -p 8000-8002:8000-8002 -v "$PWD/model_repository:/models:ro" \
#     registry.example.com/recsys/recsys-triton:0.1.0
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Python 3.11 (Ubuntu 22.04 base: deadsnakes), with libpython3.11 for the backend stub.
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev libpython3.11 \
    && apt-get purge -y software-properties-common gpg-agent \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

# The project's pinned dependency set (full lock; `make setup` installs the same file).
WORKDIR /opt/recsys
COPY requirements.lock ./
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/pip install -r requirements.lock

# Python-backend stub for 3.11 in place of NGC's 3.10 one.
RUN stub=/opt/venv/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
    && test -x "$stub" \
    && cp "$stub" /opt/tritonserver/backends/python/triton_python_backend_stub

# Project code and config (see .dockerignore). Not pip-installed: recsys.settings finds
# config/default.yaml relative to the source tree.
COPY . /opt/recsys

# Non-root user; the chart runs as the same UID/GID (podSecurityContext) with a read-only root
# filesystem and emptyDirs on /tmp, /dev/shm and HOME.
RUN groupadd --gid 10001 recsys \
    && useradd --uid 10001 --gid 10001 --home-dir /home/recsys --create-home \
        --shell /usr/sbin/nologin recsys

ENV PATH=/opt/tritonserver/bin:/opt/venv/bin:${PATH} \
    PYTHONPATH=/opt/recsys:/opt/venv/lib/python3.11/site-packages \
    RECSYS_CONFIG=/opt/recsys/config/default.yaml \
    HOME=/home/recsys \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib

USER 10001
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models"]
