#!/usr/bin/env bash
# The local stack: a Prefect server (SQLite, under .serve/), the `batchgate` process work pool,
# the connector blocks registered, every deployment of prefect.yaml, and a worker.
# `make serve` runs this; `make stop` (scripts/stop.sh) stops what it started.
# PORT (default 4200) picks the port; BIN the folder holding prefect (default .venv/bin).
# Notifications (deployments/automations.py): NOTIFY_URL, a webhook the automations post to, or
# NOTIFY_BLOCK, a notification block saved in Prefect (TYPE-SLUG/NAME, e.g. slack-webhook/alerts).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${BIN:-$root/.venv/bin}
port=${PORT:-4200}
state=${SERVE_DIR:-$root/.serve}
mkdir -p "$state"

export PREFECT_HOME="$state/prefect-home"
export PREFECT_API_URL="http://127.0.0.1:$port/api"
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$port
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2}
export BATCHGATE_HOME="$root"
echo "$PREFECT_API_URL" > "$state/api_url"

if ! curl -fs --max-time 5 "$PREFECT_API_URL/health" > /dev/null 2>&1; then
  nohup "$bin/prefect" server start --host 127.0.0.1 --port "$port" > "$state/server.log" 2>&1 &
  echo $! > "$state/server.pid"
  for _ in $(seq 1 120); do
    curl -fs --max-time 5 "$PREFECT_API_URL/health" > /dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fs --max-time 5 "$PREFECT_API_URL/health" > /dev/null || { echo "the Prefect server did not start; see $state/server.log" >&2; exit 1; }
fi

"$bin/prefect" work-pool inspect batchgate > /dev/null 2>&1 \
  || "$bin/prefect" work-pool create batchgate --type process > /dev/null
for module in blocks.file_source blocks.notion_source blocks.sql_destination blocks.webflow; do
  "$bin/prefect" block register -m "$module" > /dev/null
done
"$bin/prefect" --no-prompt deploy --all > "$state/deploy.log" 2>&1 \
  || { cat "$state/deploy.log" >&2; exit 1; }

# the automations that notify of a sample awaiting review, a breaker that tripped, a run that
# ended failed or partial (the URL is never printed: a webhook URL often holds a token)
if [ -n "${NOTIFY_BLOCK:-}" ]; then
  "$bin/python" -m deployments.automations --block "$NOTIFY_BLOCK"
elif [ -n "${NOTIFY_URL:-}" ]; then
  "$bin/python" -m deployments.automations
else
  echo "notifications: off (set NOTIFY_URL to a webhook URL, or NOTIFY_BLOCK to a saved block; README: Notifications)"
fi

if [ ! -f "$state/worker.pid" ] || ! kill -0 "$(cat "$state/worker.pid")" 2> /dev/null; then
  nohup "$bin/prefect" worker start --pool batchgate --name batchgate-local > "$state/worker.log" 2>&1 &
  echo $! > "$state/worker.pid"
fi
echo "Prefect UI: http://127.0.0.1:$port  (deployments: $(grep -c '^  - name:' prefect.yaml); worker log: $state/worker.log)"
echo "Use it from this shell: export PREFECT_API_URL=$PREFECT_API_URL"
