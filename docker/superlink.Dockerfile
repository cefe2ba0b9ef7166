# SuperLink: Flower's own image, unchanged apart from the pinned version.
# It runs with `--isolation process`: ServerApps run in the `serverapp` service
# (docker/app.Dockerfile + flower-superexec), so this image needs no ML stack.
ARG FLWR_VERSION=1.42.0
FROM flwr/superlink:${FLWR_VERSION}
ENV FLWR_DISABLE_UPDATE_CHECK=1
# Entrypoint (from the base image): flower-superlink; flags come from the compose files.
