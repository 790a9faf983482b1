# One image for both roles: `python -m conveyor.producer` (default) or `python -m conveyor.consumer`.
# Stage 1 builds wheels (needs no compiler for our deps, but keeps pip caches out of the image).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY conveyor ./conveyor
COPY config ./config
COPY shared ./shared
COPY producer ./producer
COPY consumer ./consumer
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[fast]'

# Stage 2: the runtime, non-root.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin conveyor
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'conveyor[fast]' \
    && rm -rf /wheels
# Task records default to SQLite in /data (a volume); set CONVEYOR_DATABASE_URL to a
# postgresql:// URL to share one store between producer replicas (see compose.yaml).
RUN mkdir /data && chown conveyor /data
VOLUME /data
USER conveyor
WORKDIR /home/conveyor
ENV PYTHONUNBUFFERED=1 \
    CONVEYOR_DATABASE_URL=sqlite:////data/conveyor.db \
    CONVEYOR_LOG_FORMAT=json \
    CONVEYOR_HTTP_HOST=0.0.0.0 \
    CONVEYOR_HTTP_PORT=8000 \
    CONVEYOR_HEALTH_FILE=/tmp/conveyor-alive
# 8000: the producer's HTTP API, dashboard and /metrics; 9108: a consumer's /metrics.
EXPOSE 8000 9108
# Both services touch CONVEYOR_HEALTH_FILE every 5 s while their event loop runs.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "conveyor.shared.health"]
# The consumer finishes in-flight tasks on SIGTERM (CONVEYOR_SHUTDOWN_GRACE_S, default 30 s):
# give it a longer stop timeout (compose: stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "conveyor.producer"]
