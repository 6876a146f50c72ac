# syntax=docker/dockerfile:1
# syncwatch container image.
#
#   docker build -t syncwatch:0.1.0 .
#   docker run --rm -p 9875:9875 -v "$PWD/config.toml:/etc/syncwatch/config.toml:ro" \
#       -v syncwatch-state:/var/lib/syncwatch syncwatch:0.1.0
#
# Stage 1 builds syncwatch and its dependencies into a virtualenv; the final image holds
# that virtualenv on a plain python slim base: no compiler, no pip cache, no sources.

FROM python:3.11.13-slim-bookworm AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/syncwatch
# Runtime dependencies exactly as locked, every file checked against its hash.
COPY requirements.lock requirements-build.lock ./
RUN /opt/syncwatch/bin/pip install --require-hashes --no-deps -r requirements.lock
# The build backend (hatchling and its dependencies) as locked and hashed too, in a venv of
# its own that the image does not ship; requirements-build.lock is [build-system] requires
# of pyproject.toml, compiled as its first lines say (tests/test_release.py checks it).
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md LICENSE hatch_build.py ./
COPY syncwatch ./syncwatch
# No isolation: the wheel is built by the locked backend, nothing is fetched for it. Then
# installed alone, byte-compiled here (the running container has a read-only root
# filesystem); no dependency is resolved at this step: they all came from the lock.
RUN /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /tmp/wheels . \
    && /opt/syncwatch/bin/pip install --no-deps /tmp/wheels/syncwatch-*.whl


FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="syncwatch" \
      org.opencontainers.image.description="Alerts when Timbal or Paragon data syncs go stale or break; Prometheus metrics on :9875." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/syncwatch/bin:${PATH}" \
    STATE_DIRECTORY=/var/lib/syncwatch

# Fixed UID/GID 10001, matching runAsUser in deploy/kubernetes/.
RUN groupadd --system --gid 10001 syncwatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/syncwatch --shell /usr/sbin/nologin syncwatch \
    && mkdir -p /etc/syncwatch /var/lib/syncwatch \
    && chown 10001:10001 /var/lib/syncwatch

COPY --from=builder /opt/syncwatch /opt/syncwatch

WORKDIR /var/lib/syncwatch
VOLUME ["/var/lib/syncwatch"]
USER 10001:10001
EXPOSE 9875

ENTRYPOINT ["syncwatch"]
CMD ["run", "--config", "/etc/syncwatch/config.toml"]
