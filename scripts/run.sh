#!/usr/bin/env bash
# Runs BillingWatch locally: the exporter, Prometheus and Alertmanager with the repository's configs.
# Installs what is missing first (Debian packages prometheus and prometheus-alertmanager, a .venv with the
# project). Data, logs and the generated local signing secret live under .data/ (git-ignored). Ctrl-C stops all.
#
#   ./scripts/run.sh           exporter + Prometheus + Alertmanager
#   ./scripts/run.sh --demo    also a local mail catcher and webhook receiver, and signed demo traffic that
#                              includes a duplicate charge: the alert shows up in Alertmanager and the inbox.
#
# Ports (env): BILLINGWATCH_WEBHOOK_PORT=8000 BILLINGWATCH_METRICS_PORT=9847 PROMETHEUS_PORT=9090
#   ALERTMANAGER_PORT=9093; with --demo also DEMO_SMTP_PORT=1025 DEMO_WEBHOOK_PORT=5001 DEMO_INBOX_PORT=8025.
#   PROMETHEUS_EXTERNAL_URL, ALERTMANAGER_EXTERNAL_URL: the addresses notifications link to (default 127.0.0.1).
# Other env: STRIPE_WEBHOOK_SECRET (else a local one is generated once), BILLINGWATCH_CONFIG (a config file),
#   BILLINGWATCH_DATA_DIR (default .data), BILLINGWATCH_SKIP_INSTALL=1 (skip the install checks).
set -euo pipefail
# Paths given relative to where the command was run from, before moving to the repository.
abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }
if [ -n "${BILLINGWATCH_CONFIG:-}" ]; then BILLINGWATCH_CONFIG="$(abspath "$BILLINGWATCH_CONFIG")"; export BILLINGWATCH_CONFIG; fi
if [ -n "${BILLINGWATCH_DATA_DIR:-}" ]; then mkdir -p "$BILLINGWATCH_DATA_DIR"; BILLINGWATCH_DATA_DIR="$(abspath "$BILLINGWATCH_DATA_DIR")"; fi
cd "$(dirname "$0")/.."
REPO="$(pwd)"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
DEMO=0
for arg in "$@"; do
  case "$arg" in
    --demo) DEMO=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
# BILLINGWATCH_SKIP_INSTALL=1 skips the install checks (the tests, which run from an installed venv, set it).
if [ "${BILLINGWATCH_SKIP_INSTALL:-0}" != 1 ]; then
  ensure_debian_packages
  if [ "$DEMO" = 1 ]; then ensure_venv demo; else ensure_venv; fi
fi
PY="$REPO/.venv/bin/python"

DATA="${BILLINGWATCH_DATA_DIR:-$REPO/.data}"
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"
WEBHOOK_PORT="${BILLINGWATCH_WEBHOOK_PORT:-8000}"
METRICS_PORT="${BILLINGWATCH_METRICS_PORT:-9847}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
SMTP_PORT="${DEMO_SMTP_PORT:-1025}"
RECEIVER_PORT="${DEMO_WEBHOOK_PORT:-5001}"
INBOX_PORT="${DEMO_INBOX_PORT:-8025}"
PROMETHEUS_URL="${PROMETHEUS_EXTERNAL_URL:-http://127.0.0.1:$PROMETHEUS_PORT/}"
ALERTMANAGER_URL="${ALERTMANAGER_EXTERNAL_URL:-http://127.0.0.1:$ALERTMANAGER_PORT/}"

# The webhook listener is public by default (Stripe, or `stripe listen`, must reach it); the rest stays local.
WEBHOOK_LISTEN="${BILLINGWATCH_LISTEN:-0.0.0.0:$WEBHOOK_PORT}"
WEBHOOK_PORT="${WEBHOOK_LISTEN##*:}"
METRICS_LISTEN="127.0.0.1:$METRICS_PORT"

ports=("webhook=$WEBHOOK_LISTEN" "metrics=$METRICS_LISTEN" "prometheus=127.0.0.1:$PROMETHEUS_PORT"
  "alertmanager=127.0.0.1:$ALERTMANAGER_PORT")
if [ "$DEMO" = 1 ]; then
  ports+=("demo-smtp=127.0.0.1:$SMTP_PORT" "demo-webhook-receiver=127.0.0.1:$RECEIVER_PORT"
    "demo-inbox=127.0.0.1:$INBOX_PORT")
fi
"$PY" scripts/stack_config.py ports-free "${ports[@]}"

# Signing secret: the user's, or one generated for local use only, kept under .data/ for `billingwatch trigger`.
if [ -z "${STRIPE_WEBHOOK_SECRET:-}" ]; then
  SECRET_FILE="$DATA/webhook-secret"
  if [ ! -s "$SECRET_FILE" ]; then
    (umask 077 && "$PY" -c 'import secrets; print("whsec_local_" + secrets.token_hex(24))' >"$SECRET_FILE")
  fi
  STRIPE_WEBHOOK_SECRET="$(cat "$SECRET_FILE")"
  # Only a secret generated here is shown: it is good for this machine alone. A real one is never printed.
  SECRET_NOTE="generated for local use, stored in $SECRET_FILE:
    $STRIPE_WEBHOOK_SECRET"
  TRIGGER_ENV="STRIPE_WEBHOOK_SECRET=\$(cat $SECRET_FILE) "
else
  TRIGGER_ENV=""
  SECRET_NOTE="from STRIPE_WEBHOOK_SECRET (not shown)"
fi
export STRIPE_WEBHOOK_SECRET

# Prometheus and Alertmanager get the repository's configs with only the addresses set to the ports in use.
RUN_DIR="$DATA/run"
LOGS="$DATA/logs"
mkdir -p "$RUN_DIR" "$LOGS" "$DATA/prometheus" "$DATA/alertmanager"
# The rules are rendered from your config's `rules:` section (or the defaults) with links that work in this run:
# runbook_url on this run's private listener (/runbook) and no dashboard_url (no Grafana here), unless your config
# sets rules.runbook_base_url / rules.grafana_url itself.
RULES_DIR="$RUN_DIR/rules"
rm -rf "$RULES_DIR"
rules_args=(rules --output "$RULES_DIR")
if [ -n "${BILLINGWATCH_CONFIG:-}" ]; then rules_args+=(--config "$BILLINGWATCH_CONFIG"); fi
mapfile -t link_flags < <("$PY" scripts/stack_config.py link-flags --metrics-port "$METRICS_PORT" \
  ${BILLINGWATCH_CONFIG:+--config "$BILLINGWATCH_CONFIG"})
"$REPO/.venv/bin/billingwatch" "${rules_args[@]}" "${link_flags[@]}" >/dev/null
"$PY" scripts/stack_config.py local --out "$RUN_DIR" --rules-dir "$RULES_DIR" --metrics-port "$METRICS_PORT" \
  --alertmanager-port "$ALERTMANAGER_PORT" --smtp-port "$SMTP_PORT" --webhook-port "$RECEIVER_PORT"

PIDS=()
NAMES=()
start() {  # start NAME CMD...: run in the background, output to .data/logs/NAME.log
  local name="$1"; shift
  "$@" >>"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}
start_shown() {  # like start, but standard output stays on the terminal (the demo's one-line notifications)
  local name="$1"; shift
  "$@" 2>>"$LOGS/$name.log" &
  PIDS+=("$!")
  NAMES+=("$name")
}

STOPPING=0
stop_all() {
  [ "$STOPPING" = 1 ] && return
  STOPPING=1
  trap - INT TERM
  echo
  echo "stopping BillingWatch..."
  local i
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  # Each part flushes its state on SIGTERM; give them 15 s, then kill what is left.
  for _ in $(seq 1 150); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped. Data and logs are kept in $DATA"
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

if [ "$DEMO" = 1 ]; then
  start_shown demo "$PY" -u scripts/demo.py catcher --smtp-port "$SMTP_PORT" --webhook-port "$RECEIVER_PORT" \
    --ui-port "$INBOX_PORT" --dir "$DATA/demo"
fi
serve_args=(serve --listen "$WEBHOOK_LISTEN" --metrics-listen "$METRICS_LISTEN" --state "$DATA/billingwatch-state.sqlite3")
# The landing page (/) links the Prometheus and Alertmanager this script starts.
start exporter env BILLINGWATCH_PROMETHEUS_URL="$PROMETHEUS_URL" BILLINGWATCH_ALERTMANAGER_URL="$ALERTMANAGER_URL" \
  "$REPO/.venv/bin/billingwatch" "${serve_args[@]}"
# External URLs: the addresses in every notification's links (the alert's source in Prometheus, Alertmanager).
# 40 days of retention: revenue_drop compares with the same hours of the previous four weeks, and its trend with
# the level (the median of seven days) four weeks back, which reaches 36 days back (rules.revenue_drop).
start prometheus prometheus --config.file="$RUN_DIR/prometheus.yml" --storage.tsdb.path="$DATA/prometheus" \
  --storage.tsdb.retention.time=40d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --web.external-url="$PROMETHEUS_URL"
start alertmanager prometheus-alertmanager --config.file="$RUN_DIR/alertmanager.yml" \
  --storage.path="$DATA/alertmanager" --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address= \
  --web.external-url="$ALERTMANAGER_URL"

ready=("http://$METRICS_LISTEN/readyz" "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
  "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready")
if ! "$PY" scripts/stack_config.py wait --timeout 60 "${ready[@]}"; then
  echo "BillingWatch did not start; the last log lines:" >&2
  for name in "${NAMES[@]}"; do echo "--- $LOGS/$name.log" >&2; tail -n 15 "$LOGS/$name.log" >&2; done
  exit 1
fi

cat <<EOF

BillingWatch is running (logs in $LOGS, data in $DATA). Ctrl-C stops everything.

  Stripe webhook endpoint   http://127.0.0.1:$WEBHOOK_PORT/webhooks/stripe
  Metrics and API           http://$METRICS_LISTEN/   (/metrics, /api/v1/anomalies, /api/v1/events/recent)
  Prometheus                http://127.0.0.1:$PROMETHEUS_PORT/alerts
  Alertmanager              http://127.0.0.1:$ALERTMANAGER_PORT/#/alerts
  Runbook                   http://$METRICS_LISTEN/runbook   (each alert links to its entry)

  Signing secret: $SECRET_NOTE
  Send a test event (from another terminal):
    $TRIGGER_ENV.venv/bin/billingwatch trigger charge.succeeded --url http://127.0.0.1:$WEBHOOK_PORT/webhooks/stripe
  With a Stripe account (real events from your test mode), in another terminal:
    stripe listen --forward-to localhost:$WEBHOOK_PORT/webhooks/stripe
  then restart with the secret it prints:  STRIPE_WEBHOOK_SECRET=whsec_... ./scripts/run.sh
  Emails and webhooks go where alertmanager.yml says (docs/running.md explains how to set your own).
EOF

if [ "$DEMO" = 1 ]; then
  cat <<EOF

  Demo inbox (emails and webhook notifications)  http://127.0.0.1:$INBOX_PORT/
  Sending signed demo traffic with a duplicate charge; within about 15 s the DuplicateCharge alert appears in
  Alertmanager, an email in the inbox and a notification at the webhook receiver (also printed below).

EOF
  "$PY" scripts/demo.py traffic --url "http://127.0.0.1:$WEBHOOK_PORT/webhooks/stripe" --pause 0.1 || true
fi

# Wait until Ctrl-C (the trap) or until one of the parts dies.
while :; do
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      echo "error: ${NAMES[$i]} exited; see $LOGS/${NAMES[$i]}.log" >&2
      tail -n 15 "$LOGS/${NAMES[$i]}.log" >&2 || true
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
