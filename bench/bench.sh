#!/usr/bin/env bash
# make bench: load-test this project alone with wrk, on SQLite with 10,000 items, with the
# access log and every middleware on (as served). Prints req/s and latency percentiles for
# GET /health, GET /v1/items?limit=20&offset=N and GET /v1/items/{id}.
# The server runs on CPU 0 and wrk on CPU 1, so they do not fight over one core.
# For ratios against other frameworks, use ../shared/bench/compare.sh (see README).
#
#   DURATION=8s CONNECTIONS=32 PORT=18080 make bench
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
PORT="${PORT:-18080}"
PYTHON="${PYTHON:-python3}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
export DATABASE_URL="sqlite:///$work/bench.db"
"$PYTHON" server.py seed --items 10000 >/dev/null
taskset -c 0 "$PYTHON" server.py --port "$PORT" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done

printf '%-28s %10s %9s %9s %9s\n' endpoint req/s p50 p90 p99
for endpoint in health list get; do
  case $endpoint in
    health) target=(/health) ;;
    list)   target=(-s bench/items_list.lua /v1/items) ;;
    get)    target=(-s bench/items_get.lua /v1/items/1) ;;
  esac
  url="http://127.0.0.1:$PORT${target[-1]}"
  script=("${target[@]:0:${#target[@]}-1}")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s "${script[@]}" "$url" >/dev/null  # warm-up
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "$url" >"$work/$endpoint.txt"
  awk -v name="$endpoint" '
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = $2 } $1 == "90%" { p90 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { errors = $NF }
    END { printf "%-28s %10s %9s %9s %9s%s\n", name, rps, p50, p90, p99, (errors ? "  non-2xx: " errors : "") }
  ' "$work/$endpoint.txt"
done
echo "peak RSS: $(awk '/^VmHWM:/ {print $2, $3}' /proc/$server/status)"
