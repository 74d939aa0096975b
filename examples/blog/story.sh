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
# sandbox_ready PID LOG: wait (30 s at most) until the sandbox names its URL in LOG and that URL
# answers, then print its port. A sandbox that exits or never answers stops the story, with its log.
sandbox_ready() {
  "$python" - "$1" "$2" <<'EOF'
import os, re, sys, time, urllib.error, urllib.request
pid, log = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 30
while True:
    named = re.search(r"sandbox on (http://\S+?:(\d+)/v2)", open(log).read())
    if named:
        try:
            urllib.request.urlopen(named[1], timeout=2)
            answered = True
        except urllib.error.HTTPError:
            answered = True  # any HTTP answer: it is serving
        except OSError:
            answered = False
        if answered:
            print(named[2])
            sys.exit(0)
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"story: the Webflow sandbox exited:\n{open(log).read()}")
    if time.monotonic() > deadline:
        sys.exit(f"story: the Webflow sandbox did not answer within 30 s:\n{open(log).read()}")
    time.sleep(0.1)
EOF
}

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
# 2 get HTTP 500 while $work/outage exists (an outage outlasting the retries: the group they
# are in is split until only they fail), 1 gets 400 (it fails alone, the rest is sent again)
touch "$work/outage"
# SANDBOX_PORT=0: the sandbox binds a free port and names it; the job reads $SANDBOX_PORT
PYTHONPATH="$root" "$python" -m tests.fakes.webflow_server --port "$SANDBOX_PORT" \
  --fail serverless-cold-starts cloud-networking-basics --reject lakehouse-table-formats \
  --fail-while "$work/outage" >"$work/sandbox.log" 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null' EXIT
SANDBOX_PORT=$(sandbox_ready "$sandbox" "$work/sandbox.log") || exit 1
echo "Webflow sandbox on http://127.0.0.1:$SANDBOX_PORT/v2"
expect 3 "$bin" full --job blog/job-webflow.yaml
run=$(latest full)
echo "== 6. The dead-letter queue"
expect 0 "$bin" dlq list --run "$run"
expect 0 "$bin" dlq inspect post-033
echo "== 7. The outage is over: retry the api-errors only, then the one invalid item"
rm -f "$work/outage"
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
