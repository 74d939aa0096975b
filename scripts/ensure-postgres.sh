#!/usr/bin/env bash
# The ledger tests need PostgreSQL on 127.0.0.1:5432. The machine normally starts it; start it if not.
set -u
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | head -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done
fi
echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will fail in CI" >&2
exit 0
