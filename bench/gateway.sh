#!/usr/bin/env bash
# bench/gateway.sh - the gateway under load, as ../shared/reference/llamaserver-bench.md measured
# llama-server: a random-weight model of the same shape (mica synth), `mica serve` with 8 slots of
# 512 positions on 2 threads, and ../shared/reference/loadgen.py with 1, 4 and 8 concurrent
# streaming clients (12 requests each, 64 tokens, greedy, byte tokens banned). Then the same
# with tiers on 4 slots: 6 standard clients and 2 VIP ones at once, each tier's TTFT p50/p99
# (VIP requests preempt standard ones when the slots are full).
#
#   bench/gateway.sh [qwen2-0.5b|moe-8x|MODEL.gguf] [DIR]   (DIR keeps the model between runs)
#
# Needs build/mica (make) and python3. Prints loadgen's tables; JSON results go to DIR/results.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-qwen2-0.5b}
dir=${2:-/tmp/mica-gateway-bench}
mkdir -p "$dir/results"
model="$dir/$preset.q8_0.gguf"
case "$preset" in *.gguf) model=$preset; preset=$(basename "$preset" .gguf) ;; esac
loadgen=../shared/reference/loadgen.py
[ -f "$loadgen" ] || { echo "gateway.sh: $loadgen is missing"; exit 1; }
[ -f "$model" ] || build/mica synth --preset "$preset" --type q8_0 -o "$model"

log="$dir/serve.log"
# The default tier is vip, so that standard clients can ask for a lower one (a request may
# only lower its tier).
cat > "$dir/mica.json" <<JSON
{"default_tier": "vip", "data_dir": "$dir/data"}
JSON
pid=
stop_server() { [ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=; }
start_server() { # PARALLEL
    stop_server
    port=$((20000 + RANDOM % 20000))
    build/mica serve -c "$dir/mica.json" -m "m=$model" --port "$port" -t 2 --parallel "$1" \
        --ctx 512 --no-content-logs > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1 && return
        sleep 0.1
    done
    echo "gateway.sh: the server did not start:"; cat "$log"; exit 1
}
trap stop_server EXIT

start_server 8
common=(--port "$port" --endpoint completions --model m --max-tokens 64 --temperature 0
        --prompt-words 20 --ban-tokens 0-1,3-258)
echo "== all clients in one tier (compare: llamaserver-bench.md, /v1/completions)"
python3 "$loadgen" "${common[@]}" --concurrency 1,4,8 --requests 12 --warmup 1 \
    --label "mica-$preset" --json-out "$dir/results/mica-$preset.json"

echo "== tiers at once on 4 slots: 6 standard clients, then 2 vip clients, 12 requests each"
start_server 4
common[1]=$port
python3 "$loadgen" "${common[@]}" --concurrency 6 --requests 12 --warmup 0 \
    --extra '{"service_tier": "standard"}' --label "standard" \
    --json-out "$dir/results/tiers-standard.json" > "$dir/results/tiers-standard.txt" &
std=$!
sleep 2 # the standard clients fill the slots first
python3 "$loadgen" "${common[@]}" --concurrency 2 --requests 12 --warmup 0 \
    --label "vip" --json-out "$dir/results/tiers-vip.json"
wait $std
cat "$dir/results/tiers-standard.txt"
