#!/usr/bin/env bash
# make bench: load-test this project alone with wrk, on SQLite with 10,000 items, with the
# access log and every middleware on (as served; the rate limits with quotas of the bench's
# own, see RATE_LIMITS below). Prints req/s and latency percentiles for
# GET /health, GET /v1/items?limit=20&offset=N and GET /v1/items/{id}, and the peak memory.
# The server runs on CPU 0 and wrk on CPU 1, so they do not fight over one core (on a
# machine with one CPU, or without taskset, both run unpinned and the figures mean less).
# Needs wrk, curl and Python 3.11+; nothing is installed and nothing outside a temporary
# folder is written. Figures and how to read them: docs/performance.md.
#
#   DURATION=8s CONNECTIONS=32 PORT=18080 make bench
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
PORT="${PORT:-18080}"
PYTHON="${PYTHON:-python3}"
STARTUP_SECONDS=10
if ! command -v wrk >/dev/null; then
  echo "make bench needs wrk, an HTTP load generator: apt-get install wrk (Debian, Ubuntu) or brew install wrk (macOS)" >&2
  exit 2
fi
if command -v taskset >/dev/null && [ "$(nproc 2>/dev/null || echo 1)" -ge 2 ]; then
  on_server_cpu=(taskset -c 0) on_client_cpu=(taskset -c 1)
else
  on_server_cpu=() on_client_cpu=()
  echo "note: server and wrk share the CPUs (no taskset, or one CPU): expect lower, noisier figures" >&2
fi

work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# A database and a secret of the bench's own, so a run leaves var/ as it was.
export DATABASE_URL="sqlite:///$work/bench.db" SECRET_KEY="bench-secret-key-that-is-at-least-32-bytes-long"
# CORS on, as for a browser front end: without CORS_ORIGINS its middleware is not even there.
export CORS_ORIGINS="https://shop.example"
# Rate limits on, every request counted, with quotas no load generator reaches (a million
# requests a second per caller, where the shipped ones allow 300 a minute): the limiter does
# all its work and never refuses. The bench measures the shop, not its 429s.
export RATE_LIMITS="default=1000000/1,write=1000000/1,auth=1000000/1"
"$PYTHON" server.py seed --items 10000 >/dev/null
# ${array[@]+"${array[@]}"}: an empty array expands to nothing, also under set -u on bash
# before 4.4 (macOS), where "${array[@]}" of an empty array is an error.
${on_server_cpu[@]+"${on_server_cpu[@]}"} "$PYTHON" server.py --port "$PORT" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 $((STARTUP_SECONDS * 10))); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break
  sleep 0.1
done
if ! curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; then
  echo "the server did not answer on port $PORT within $STARTUP_SECONDS s; it said:" >&2
  tail -5 "$work/server.log" >&2
  exit 1
fi

printf '%-28s %10s %9s %9s %9s\n' endpoint req/s p50 p90 p99
for endpoint in health list get; do
  case $endpoint in
    health) script=() path=/health ;;
    list)   script=(-s bench/items_list.lua) path=/v1/items ;;
    get)    script=(-s bench/items_get.lua) path=/v1/items/1 ;;
  esac
  url="http://127.0.0.1:$PORT$path"
  ${on_client_cpu[@]+"${on_client_cpu[@]}"} wrk -t1 -c"$CONNECTIONS" -d1s ${script[@]+"${script[@]}"} "$url" >/dev/null  # warm-up
  ${on_client_cpu[@]+"${on_client_cpu[@]}"} wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency ${script[@]+"${script[@]}"} "$url" >"$work/$endpoint.txt"
  awk -v name="$endpoint" '
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = $2 } $1 == "90%" { p90 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { errors = $NF }
    END { printf "%-28s %10s %9s %9s %9s%s\n", name, rps, p50, p90, p99, (errors ? "  non-2xx: " errors : "") }
  ' "$work/$endpoint.txt"
done
if [ -r "/proc/$server/status" ]; then
  echo "peak RSS: $(awk '/^VmHWM:/ {print $2, $3}' "/proc/$server/status")"
fi
