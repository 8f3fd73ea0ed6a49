#!/usr/bin/env bash
# Orders per second against GET /v1/items/{id}, on the same server in the same run.
#
#   bash bench/orders.sh sqlite            (or: postgresql, with PostgreSQL on 127.0.0.1:5432)
#
# 10,000 items with stock enough for the whole run; each order is one line, quantity 1, of
# a random item, so orders rarely wait for each other's row locks. The server runs on CPU 0
# and wrk on CPU 1; ROUNDS alternating runs of each, and the medians are compared.
# Every POST is a full transaction with a durable COMMIT (SQLite: synchronous=FULL, so an
# fsync per order; PostgreSQL: its WAL flush), so this measures the disk as much as Python.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE="${1:-sqlite}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-3}"
PORT="${PORT:-18081}"
PYTHON="${PYTHON:-python3}"
PG="${PG:-postgresql://postgres@127.0.0.1:5432}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  [ "$ENGINE" = postgresql ] && psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_orders" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
case $ENGINE in
  sqlite) export DATABASE_URL="sqlite:///$work/bench.db" ;;
  postgresql)
    PGOPTIONS="-c client_min_messages=warning" psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS bench_orders" -c "CREATE DATABASE bench_orders" >/dev/null
    export DATABASE_URL="$PG/bench_orders" ;;
  *) echo "usage: $0 sqlite|postgresql" >&2; exit 2 ;;
esac
export SECRET_KEY="bench-secret-key-that-is-at-least-32-bytes-long" PBKDF2_ITERATIONS=1000
export CORS_ORIGINS="https://shop.example"  # CORS on, as in bench.sh
export RATE_LIMITS="default=1000000/1,write=1000000/1,auth=1000000/1"  # at work, never refusing, as in bench.sh
export MAIL_OUTBOX_DIR="$work/outbox"  # each order's email, written by the in-process job worker
"$PYTHON" server.py seed --items 10000 >/dev/null
"$PYTHON" - <<'PY'
import os, db
database = db.open_database(os.environ["DATABASE_URL"])
with database.transaction() as connection:
    connection.execute("UPDATE items SET stock = 1000000")
database.close()
PY
taskset -c 0 "$PYTHON" server.py --port "$PORT" >"$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -sf -o /dev/null "$base/health" && break; sleep 0.1; done
credentials='{"email": "bench@example.com", "password": "a bench that never sleeps at night"}'
curl -sf -o /dev/null -X POST "$base/v1/auth/register" -H 'Content-Type: application/json' -d "$credentials"
TOKEN=$(curl -sf -X POST "$base/v1/auth/login" -H 'Content-Type: application/json' -d "$credentials" \
  | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
export TOKEN

run() {  # run NAME SCRIPT PATH -> prints "req/s p99 non2xx"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$base$3" >"$work/$1.txt"
  awk '/^Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = $2 } /Non-2xx/ { errors = $NF }
       END { printf "%s %s %s\n", rps, p99, (errors ? errors : 0) }' "$work/$1.txt"
}
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s -s bench/items_get.lua "$base/v1/items/1" >/dev/null
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d1s -s bench/orders_post.lua "$base/v1/orders" >/dev/null
printf '%-6s %-22s %10s %9s %8s\n' round endpoint req/s p99 non-2xx
for round in $(seq 1 "$ROUNDS"); do
  read -r rps p99 errors < <(run get bench/items_get.lua /v1/items/1)
  printf '%-6s %-22s %10s %9s %8s\n' "$round" "GET /v1/items/{id}" "$rps" "$p99" "$errors"
  echo "$rps" >>"$work/get.rps"
  read -r rps p99 errors < <(run orders bench/orders_post.lua /v1/orders)
  printf '%-6s %-22s %10s %9s %8s\n' "$round" "POST /v1/orders" "$rps" "$p99" "$errors"
  echo "$rps" >>"$work/orders.rps"
  if [ "$errors" != 0 ]; then
    echo "some orders were refused, so orders/s would mean nothing; the server said:" >&2
    tail -5 "$work/server.log" >&2
    exit 1
  fi
done
"$PYTHON" - "$work" "$ENGINE" <<'PY'
import statistics, sys
work, engine = sys.argv[1], sys.argv[2]
get = statistics.median(float(line) for line in open(f"{work}/get.rps"))
orders = statistics.median(float(line) for line in open(f"{work}/orders.rps"))
print(f"{engine}: median GET {get:.0f} req/s, POST /v1/orders {orders:.0f} orders/s, ratio {orders / get:.2f}")
PY
echo "orders placed: $(curl -sf "$base/v1/orders?limit=1" -H "Authorization: Bearer $TOKEN" >/dev/null && "$PYTHON" -c "
import os, db
database = db.open_database(os.environ['DATABASE_URL'])
with database.connection() as c: print(c.fetch_value('SELECT count(*) AS n FROM orders'))
database.close()")"
