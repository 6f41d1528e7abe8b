# The profiler sidecar image: `profiler serve` as a non-root user, runtime dependencies only.
#   docker build -t model-profiler:0.1.0 .
#   docker run -v $PWD/profile.yaml:/etc/profiler/profile.yaml:ro -p 9090:9090 model-profiler:0.1.0
# Stage 1 builds the wheel; stage 2 installs it with its runtime dependencies (no dev tools) and the extras
# named by EXTRAS (default: hold-out sets from object storage and Parquet; --build-arg EXTRAS= leaves them out).
# The base is pinned by digest (the multi-arch index of python:3.11-slim): a rebuild gets the same bytes. To move
# to a newer one: docker buildx imagetools inspect python:3.11-slim, and replace the digest in both FROM lines.
# Size (docs/deployment.md): ~0.75 GB uncompressed with the default extras, ~0.5 GB without.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY profiler ./profiler
RUN pip install --no-cache-dir --upgrade pip setuptools wheel \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ARG EXTRAS=cloud,parquet
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROFILER_HEALTH_PORT=9090 \
    HOME=/tmp
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/*.whl)" && pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /wheels \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin profiler \
    && mkdir -p /etc/profiler /var/lib/profiler \
    && chown 10001:10001 /var/lib/profiler
USER 10001:10001
WORKDIR /var/lib/profiler
EXPOSE 9090
# Alive = /healthz answers; set PROFILER_HEALTH_PORT when server.port is not 9090.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PROFILER_HEALTH_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["profiler", "serve"]
CMD ["--config", "/etc/profiler/profile.yaml"]
