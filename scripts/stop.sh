#!/usr/bin/env bash
# Stops what scripts/serve.sh started: every worker (worker-<n>.pid), then the Prefect server.
cd "$(dirname "$0")/.."
state=${SERVE_DIR:-$(pwd)/.serve}
for pidfile in "$state"/worker-*.pid "$state/worker.pid" "$state/server.pid"; do
  name=$(basename "$pidfile" .pid)
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2> /dev/null; then
    kill "$pid" 2> /dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2> /dev/null && kill -9 "$pid" 2> /dev/null  # a worker may ignore one SIGTERM
  fi
  rm -f "$pidfile"
  echo "stopped the $name"
done
