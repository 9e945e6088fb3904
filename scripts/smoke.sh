#!/usr/bin/env bash
# Replays the README walkthrough against a real `piazza-node` process on loopback: two users chat
# with the `piazza` CLI, one offline catches up, a group and a channel (scheduled post, comment,
# views) work, a shop sells through the sandbox payment provider, and the node shuts down cleanly
# on SIGTERM.
# Usage: scripts/smoke.sh [DIR-WITH-BINARIES]   (default target/debug)
set -euo pipefail
bin=${1:-target/debug}
work=$(mktemp -d)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then kill "$node_pid"; wait "$node_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Ephemeral-ish ports so parallel runs on one machine do not collide.
port=$((20000 + RANDOM % 20000))
admin=$((port + 1))
"$bin/piazza-node" --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  2>"$work/node.log" &
node_pid=$!
for _ in $(seq 1 100); do
  grep -q "piazza-node is up" "$work/node.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "piazza-node is up" "$work/node.log" || { cat "$work/node.log"; exit 1; }

export PIAZZA_SERVER="127.0.0.1:$port" PIAZZA_CA="$work/data/tls/ca.pem"
alice=$("$bin/piazza-node" token --data-dir "$work/data" --user alice)
bob=$("$bin/piazza-node" token --data-dir "$work/data" --user bob)

# Bob listens for two messages while Alice sends them.
PIAZZA_TOKEN=$bob "$bin/piazza" --json listen --count 2 --timeout-secs 20 >"$work/listen.out" &
listen_pid=$!
sleep 1
PIAZZA_TOKEN=$alice "$bin/piazza" send --to bob "hello bob"
PIAZZA_TOKEN=$alice "$bin/piazza" send --to bob "are you there?" --client-msg-id smoke-2
PIAZZA_TOKEN=$alice "$bin/piazza" send --to bob "are you there?" --client-msg-id smoke-2   # a retry: no duplicate
wait "$listen_pid"
echo "--- bob received:"; cat "$work/listen.out"
[ "$(wc -l <"$work/listen.out")" -eq 2 ] || { echo "expected 2 pushed messages"; exit 1; }

PIAZZA_TOKEN=$bob "$bin/piazza" --json history --with alice >"$work/history.out"
echo "--- bob's history:"; cat "$work/history.out"
[ "$(wc -l <"$work/history.out")" -eq 2 ] || { echo "expected exactly 2 messages in history"; exit 1; }
grep -q '"seq":2' "$work/history.out"

# A group.
group_out=$(PIAZZA_TOKEN=$alice "$bin/piazza" --json group create friends --members bob,carol)
echo "--- group: $group_out"
group=$(printf '%s' "$group_out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["group"])')
PIAZZA_TOKEN=$bob "$bin/piazza" group send "$group" "hi friends"
PIAZZA_TOKEN=$alice "$bin/piazza" --json group history "$group" | tee "$work/group.out"
grep -q 'hi friends' "$work/group.out"

# A channel: post, a scheduled post, a comment, views.
chan_out=$(PIAZZA_TOKEN=$alice "$bin/piazza" --json channel create "Daily deals")
echo "--- channel: $chan_out"
chan=$(printf '%s' "$chan_out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["channel"])')
PIAZZA_TOKEN=$bob "$bin/piazza" channel subscribe "$chan"
PIAZZA_TOKEN=$alice "$bin/piazza" channel post "$chan" "50% off socks"
PIAZZA_TOKEN=$alice "$bin/piazza" channel post "$chan" "flash sale" --in-secs 1
PIAZZA_TOKEN=$bob "$bin/piazza" channel comment "$chan" 2 "which sizes?"
if PIAZZA_TOKEN=$bob "$bin/piazza" channel post "$chan" "not mine to post" 2>"$work/denied.err"; then
  echo "a subscriber could post"; exit 1
fi
grep -qi forbidden "$work/denied.err"
sleep 2
PIAZZA_TOKEN=$bob "$bin/piazza" --json channel history "$chan" | tee "$work/channel.out"
grep -q 'flash sale' "$work/channel.out"
grep -q '"sender":"#channel"' "$work/channel.out"
PIAZZA_TOKEN=$bob "$bin/piazza" --json channel stats "$chan" 2 --view | tee "$work/stats.out"
grep -q '"comments":1' "$work/stats.out"
grep -q '"views":1' "$work/stats.out"

# A shop: catalog, cart, checkout with a coupon, staff accept, sandbox payment, fulfil, refund.
P() { PIAZZA_TOKEN=$1 "$bin/piazza" "${@:2}"; }
P "$alice" shop create forno --name "Forno Rossi" --category bakery
P "$alice" shop replies forno --greeting "Ciao! How can we help?"
P "$alice" catalog put forno menu --title Menu
P "$alice" catalog product forno croissant --catalog menu --title Croissant --price 1.50 --currency EUR
P "$alice" catalog stock forno croissant --on-hand 40
P "$alice" coupon put forno welcome10 --percent 10 --for-days 30 --per-customer-max 1
# (Outputs go to files before grep: `grep -q` in a pipe may close it before the CLI is done.)
P "$bob" catalog list forno >"$work/catalog.out"
grep -q '40 available' "$work/catalog.out"
P "$bob" shop ask forno croissant "Nut-free?"
P "$bob" cart add forno croissant --quantity 4
P "$bob" --json order checkout forno --order bob-1 --coupon welcome10 | tee "$work/order.out"
grep -q '"minor":540' "$work/order.out"
if P "$bob" order accept forno bob-1 2>"$work/denied.err"; then
  echo "a customer accepted their own order"; exit 1
fi
P "$alice" order accept forno bob-1
P "$bob" order pay forno bob-1
for _ in $(seq 1 50); do
  P "$bob" --json order show forno bob-1 >"$work/paid.out"
  grep -q '"status":"Paid"' "$work/paid.out" && break
  sleep 0.1
done
grep -q '"status":"Paid"' "$work/paid.out" || { cat "$work/paid.out"; echo "never paid"; exit 1; }
P "$alice" order fulfil forno bob-1 --tracking counter
P "$alice" order refund forno bob-1 --amount 1.00
P "$bob" shop history forno | tee "$work/shop.out"
grep -q '#shop: Ciao! How can we help?' "$work/shop.out"
grep -q 'is now fulfilled' "$work/shop.out"
P "$bob" catalog show forno croissant >"$work/product.out"
grep -q '36 available' "$work/product.out"

curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null
curl -sf "http://127.0.0.1:$admin/metrics" >"$work/metrics.out"
grep -q piazza_sends_total "$work/metrics.out"
grep -q piazza_commerce_events_total "$work/metrics.out"

kill -TERM "$node_pid"
wait "$node_pid"
node_pid=""
echo "smoke test passed"
