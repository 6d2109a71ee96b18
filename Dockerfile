# BillingWatch exporter image: `billingwatch serve` as a non-root user, state on the /data volume (and
# docker-compose's `rules` service: `billingwatch rules --output /rules`, a volume Prometheus reads).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# exporter/runbook.md links here: the runbook the private listener serves at /runbook.
COPY docs/runbook.md ./docs/runbook.md
RUN pip install . \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home billingwatch \
    && mkdir -p /data /rules \
    && chown billingwatch:billingwatch /data /rules
# The demo webhook receiver (docker-compose's webhook-receiver service) runs from the same image.
COPY scripts/demo.py ./scripts/demo.py

USER billingwatch
# Inside a container the private listener must listen beyond loopback so Prometheus (another container) can
# scrape it; docker-compose.yml publishes it on the host's 127.0.0.1 only. Anything that can reach port 9847 (other
# containers on the network, the host if published elsewhere) reads the metrics and the anomaly API with customer
# ids: when it is reachable beyond the compose network, turn TLS and basic auth on with
# BILLINGWATCH_WEB_CONFIG_FILE=/path/web.yml (exporter-toolkit format, docs/running.md). The exporter logs a warning
# at start while it listens beyond loopback without them.
ENV BILLINGWATCH_LISTEN=0.0.0.0:8000 \
    BILLINGWATCH_METRICS_LISTEN=0.0.0.0:9847 \
    BILLINGWATCH_STATE=/data/billingwatch-state.sqlite3
VOLUME ["/data"]
EXPOSE 8000 9847

# /healthz of the public listener: plain HTTP without auth whatever the private listener's web config says (TLS
# and basic auth there would fail a plain check). The slim image has no curl, Python is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["billingwatch"]
CMD ["serve"]
