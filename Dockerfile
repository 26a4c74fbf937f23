# partnercenter-exporter: multi-stage build, non-root runtime, token cache on a volume.
FROM python:3.11-slim-bookworm AS build
# .git stays out of the build context, so the release workflow passes the tag's version and the
# commit; a plain `docker build` says 0.0.0 and "unknown" rather than guessing.
ARG VERSION=0.0.0
ARG REVISION=unknown
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY exporter ./exporter
RUN python -m venv /opt/venv \
    && SETUPTOOLS_SCM_PRETEND_VERSION_FOR_PARTNERCENTER_EXPORTER="$VERSION" \
       SETUPTOOLS_SCM_PRETEND_METADATA_FOR_PARTNERCENTER_EXPORTER="{node=\"g$REVISION\"}" \
       /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       --constraint constraints.txt .

FROM python:3.11-slim-bookworm
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="partnercenter-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Microsoft Partner Center DAP statistics" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --no-log-init --uid 10001 --user-group \
    --home-dir /var/lib/partnercenter-exporter --create-home exporter
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/partnercenter-exporter
# The rotating refresh token lives here; it must survive restarts.
VOLUME ["/var/lib/partnercenter-exporter"]
EXPOSE 9867
# /healthz needs no credentials; over TLS or another port, override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9867/healthz', timeout=4)"]
ENTRYPOINT ["partnercenter-exporter"]
CMD ["--config.file=/etc/partnercenter-exporter/config.yml"]
