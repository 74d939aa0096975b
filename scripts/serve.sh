#!/usr/bin/env bash
# The local stack: a Prefect server (SQLite, under .serve/), the `batchgate` process work pool,
# the connector blocks registered, every deployment of prefect.yaml, and a worker.
# `make serve` runs this; `make stop` (scripts/stop.sh) stops what it started.
# PORT (default 4200) picks the port, SERVE_HOST the address it listens on (default 127.0.0.1,
# this machine only; 0.0.0.0 for workers on other machines); BIN the folder holding prefect
# (default .venv/bin).
# Notifications (deployments/automations.py): NOTIFY_URL, a webhook the automations post to, or
# NOTIFY_BLOCK, a notification block saved in Prefect (TYPE-SLUG/NAME, e.g. slack-webhook/alerts).
# DB=postgres puts the server's database on the local PostgreSQL (PG_URL, default
# postgres@127.0.0.1:5432; database PREFECT_DB, default prefect, created if missing) instead of
# SQLite; WORKERS=N (default 1) starts N workers, each with its PID in SERVE_DIR/worker-<n>.pid.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${BIN:-$root/.venv/bin}
port=${PORT:-4200}
host=${SERVE_HOST:-127.0.0.1}  # SERVE_HOST=0.0.0.0: workers on other machines can reach it
# this machine's own calls (health check, deploy, workers) go to an address the server answers on
case "$host" in
  0.0.0.0) local_host=127.0.0.1 ;;
  ::) local_host='[::1]' ;;
  *:*) local_host="[$host]" ;;
  *) local_host=$host ;;
esac
state=${SERVE_DIR:-$root/.serve}
mkdir -p "$state"

export PREFECT_HOME="$state/prefect-home"
export PREFECT_API_URL="http://$local_host:$port/api"
export PREFECT_SERVER_API_HOST=$host PREFECT_SERVER_API_PORT=$port
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2}
# a request the server answers 503 (its database busy) is logged in server.log with its cause
export PREFECT_SERVER_LOG_RETRYABLE_ERRORS=${PREFECT_SERVER_LOG_RETRYABLE_ERRORS:-true}
export BATCHGATE_HOME="$root"
echo "$PREFECT_API_URL" > "$state/api_url"
workers=${WORKERS:-1}
case "$workers" in ''|*[!0-9]*|0) echo "WORKERS must be a number of workers, 1 or more (got '$workers')" >&2; exit 1;; esac

if [ "${DB:-sqlite}" = postgres ]; then
  pg=${PG_URL:-postgres@127.0.0.1:5432}
  db=${PREFECT_DB:-prefect}
  # the server talks to PostgreSQL through asyncpg, which prefect does not install by itself
  "$bin/python" -c 'import asyncpg' 2> /dev/null || "$bin/pip" install --quiet asyncpg
  "$bin/python" - "$pg" "$db" <<'PY' || exit 1
import sys
import sqlalchemy as sa
base, name = sys.argv[1], sys.argv[2]
engine = sa.create_engine(f"postgresql+psycopg2://{base}/postgres", isolation_level="AUTOCOMMIT")
try:
    with engine.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            print(f"created the PostgreSQL database {name} for the Prefect server")
except sa.exc.OperationalError as exc:
    print(f"PostgreSQL is not reachable at {engine.url.render_as_string(hide_password=True)}: "
          f"{str(exc.orig).strip().splitlines()[0]}. Fix: start it (scripts/ensure-postgres.sh) "
          "or set PG_URL=user@host:port", file=sys.stderr)
    sys.exit(1)
PY
  export PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://$pg/$db"
elif [ "${DB:-sqlite}" != sqlite ]; then
  echo "DB must be sqlite (the default) or postgres (got '$DB')" >&2; exit 1
fi

if ! curl -fs --max-time 5 "$PREFECT_API_URL/health" > /dev/null 2>&1; then
  nohup "$bin/prefect" server start --host "$host" --port "$port" > "$state/server.log" 2>&1 &
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

# N workers on the pool (a full run with batch.shards spreads over them); worker-1 keeps the name
# and files one worker had before
for n in $(seq 1 "$workers"); do
  pidfile="$state/worker-$n.pid"
  [ "$n" = 1 ] && [ -f "$state/worker.pid" ] && mv "$state/worker.pid" "$pidfile"
  if [ ! -f "$pidfile" ] || ! kill -0 "$(cat "$pidfile")" 2> /dev/null; then
    name=batchgate-local; [ "$n" = 1 ] || name="batchgate-local-$n"
    nohup "$bin/prefect" worker start --pool batchgate --name "$name" > "$state/worker-$n.log" 2>&1 &
    echo $! > "$pidfile"
  fi
done
database=SQLite; [ "${DB:-sqlite}" = postgres ] && database="PostgreSQL ($db)"
echo "Prefect UI: http://$local_host:$port  (database: $database; deployments: $(grep -c '^  - name:' prefect.yaml); workers: $workers, logs: $state/worker-<n>.log)"
echo "Use it from this shell: export PREFECT_API_URL=$PREFECT_API_URL"
