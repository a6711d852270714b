# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then a slim runtime with only what serving needs.
# The image carries the optional extras a deployment may switch on in its configuration: Sigstore
# bundle verification and the PostgreSQL driver (storage.backend postgres, e.g. the chart's replicas).
# The runtime runs as an unprivileged user and writes only to /data (and /tmp): run it with a
# read-only root filesystem (the Helm chart does).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scitt_oci ./scitt_oci
RUN python -m pip install --no-cache-dir --upgrade pip==24.3.1 \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[sigstore,postgres]"

FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 scitt && useradd --system --uid 10001 --gid scitt --home-dir /data scitt \
 && mkdir -p /data && chown scitt:scitt /data
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels "scitt-oci[sigstore,postgres]" && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8700
ENTRYPOINT ["scitt-oci"]
CMD ["serve", "--data-dir", "/data", "--listen", "0.0.0.0:8700"]
