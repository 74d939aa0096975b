#!/usr/bin/env bash
# The pattern document's whole story on examples/blog, in a scratch copy:
# dry-run, fix the blocked items, dry-run again, sample, roll the sample back, the pipeline
# (sample, approval, full), then a Webflow run with failures: the DLQ, retries, skip, export and
# a rollback. Usage: examples/blog/story.sh [WORKDIR]   (BATCHGATE=path/to/batchgate to override)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${BATCHGATE:-batchgate}
python=${PYTHON:-$(dirname "$(command -v "$bin")")/python}
work=${1:-$(mktemp -d)}
mkdir -p "$work" && rm -rf "$work/blog" "$work/.batchgate" && cp -r "$here" "$work/blog"
rm -f "$work"/blog/cms.db* && cd "$work" || exit 1
export SANDBOX_PORT=${SANDBOX_PORT:-8099} WEBFLOW_TOKEN=sandbox-token

# expect CODE COMMAND...: show and run it; stop the story if it exits with another code
expect() {
  local want=$1; shift
  printf '\n$ %s\n' "$*"
  "$@"; local got=$?
  if [ "$got" -ne "$want" ]; then echo "story: expected exit $want, got $got: $*" >&2; exit 1; fi
}
latest() { "$bin" runs --limit 20 | awk -v m="$1" '$2 == m {print $1; exit}'; }

echo "== 1. Dry-run: 3 items are blocked (exit 2)"
expect 2 "$bin" dry-run --job blog/job.yaml
echo "== 2. Fix them as the report says, and dry-run again (exit 0)"
expect 0 "$python" blog/fix_blocked.py blog
expect 0 "$bin" dry-run --job blog/job.yaml
echo "== 3. Sample mode: 3 drafts (short, medium, long) to review; then roll the sample back"
expect 0 "$bin" sample --job blog/job.yaml
expect 0 "$bin" rollback "$(latest sample)"
echo "== 4. The pipeline: dry-run, sample, approval (--yes), full"
expect 0 "$bin" pipeline --job blog/job.yaml --yes

echo "== 5. The same blog into Webflow (the local sandbox), where 3 posts fail"
# 2 get HTTP 500 for their first 4 writes (an outage outlasting the 3 retries), 1 gets 400
PYTHONPATH="$root" "$python" -m tests.fakes.webflow_server --port "$SANDBOX_PORT" \
  --fail serverless-cold-starts cloud-networking-basics --reject lakehouse-table-formats \
  --fail-times 4 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null' EXIT
sleep 1
expect 3 "$bin" full --job blog/job-webflow.yaml
run=$(latest full)
echo "== 6. The dead-letter queue"
expect 0 "$bin" dlq list --run "$run"
expect 0 "$bin" dlq inspect post-033
echo "== 7. The outage is over: retry the api-errors only, then the one invalid item"
expect 0 "$bin" dlq retry --run "$run" --error-type api-error
expect 4 "$bin" dlq retry --item post-033
echo "== 8. Skip it deliberately, and export the queue"
expect 0 "$bin" dlq skip post-033 --reason "rewrite pending in the source"
expect 0 "$bin" dlq export --run "$run" --all --format csv -o dlq.csv
echo "== 9. Roll the Webflow run back"
expect 0 "$bin" rollback "$run"
expect 0 "$bin" runs
echo
echo "Story complete in $work"
