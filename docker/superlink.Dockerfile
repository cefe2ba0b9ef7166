# SuperLink: Flower's own image, unchanged apart from the pinned version.
# It runs with `--isolation process`: ServerApps run in the `serverapp` service
# (docker/app.Dockerfile + flower-superexec), so this image needs no ML stack.
#
# BASE_IMAGE: where Flower's image cannot be pulled, a plain Python image (python3.11,
# `pip` on PATH, `useradd`) gets the pinned flwr and Flower's user id instead:
#   docker build -f docker/superlink.Dockerfile --build-arg BASE_IMAGE=python:3.11-slim .
ARG FLWR_VERSION=1.42.0
ARG BASE_IMAGE=flwr/superlink:${FLWR_VERSION}
FROM ${BASE_IMAGE}
ARG FLWR_VERSION
ENV FLWR_DISABLE_UPDATE_CHECK=1
# A no-op on Flower's image (it has flower-superlink and its user `app`, uid 49999).
RUN if ! command -v flower-superlink >/dev/null 2>&1; then \
        pip install --no-cache-dir "flwr==${FLWR_VERSION}" \
        && useradd --uid 49999 --create-home --home-dir /home/app app \
        && mkdir -p /app && chown app:app /app; \
    fi
USER 49999
WORKDIR /app
# Flags come from the compose files.
ENTRYPOINT ["flower-superlink"]
