#!/usr/bin/env bash
# Rate limits across regions: one key's limit shared by regions that each have their own
# Redis and gateway, with the links between regions delayed (and cut) by relays. Release
# binary, loopback. See loadtest/README.md ("Regions: regions.sh").
#
# Every part (but economy): policy 100/s burst 20 on header X-Client, one key, wrk on the busy
# regions' gateways at once, replicate_every INTERVAL; a gateway reaches its own
# Redis directly and every other region's through a relay that delays each byte by
# DELAY_MS one way. Reported per part: admitted (200s) over all regions / (burst + rate
# x elapsed) (target <= 1.00), and per region: admitted, 429s, 5xx, fallback decisions,
# gives, Redis commands per admitted request (what every gateway sent to that region's
# Redis, a script counting as one), replication bytes per key per round.
#   one      2 regions, all traffic in region 0: its share's rise to 0.9 (time, rounds)
#            and its admitted rate in the second half (target >= 0.90 of the limit)
#   split50  2 regions, 8 and 8 wrk connections
#   split90  2 regions, 18 and 2 wrk connections
#   cut      2 regions, 8 and 8; every relay frozen (SIGSTOP) from DURATION/3 to
#            2 DURATION/3: admitted during the cut (target <= 1.00), and the time after
#            the heal until every region holds the same counters (target <= 2 rounds)
#   kill     2 regions, 8 and 8; region 1's Redis killed -9 at DURATION/3 (not
#            restarted): region 1 follows on_redis_error (local), region 0 goes on
#   three    3 regions, all traffic in region 0 (as `one`)
#   economy  2 regions, 8 and 8, policy 1000/s burst 1000 (ratelimit.sh a's hot key),
#            replicate_every at its default (500 ms): Redis commands per admitted request
#            in each region (target < 0.05), leases and replication apart
#   economy1 the same with all traffic in region 0 (a hot key where its users are)
#
# Knobs (environment):
#   SCENARIOS="one split50 split90 cut kill three economy economy1"   which parts, in this order
#   DURATION=12      seconds of wrk per part
#   DELAY_MS=40      one-way delay between regions (a relay per pair), in ms
#   INTERVAL=200     replicate_every, in ms
#   THREADS=1        gateway server.threads (one gateway per region on 2 cores)
#   GATEWAY_BIN=...  use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh"

SCENARIOS=${SCENARIOS:-one split50 split90 cut kill three economy economy1}
DURATION=${DURATION:-12}
DELAY_MS=${DELAY_MS:-40}
INTERVAL=${INTERVAL:-200}
THREADS=${THREADS:-1}

require_positive DURATION INTERVAL THREADS
is_uint "$DELAY_MS" || die "DELAY_MS must be a whole number of milliseconds"
parse_list SCENARIOS SCENARIO_LIST scenario "one split50 split90 cut kill three economy economy1"
require_tools wrk curl python3 timeout "$REDIS_SERVER" "$REDIS_CLI"

setup_tmp gateway-regions "configs, logs, metrics snapshots, share samples"
echo "== regions test: SCENARIOS='${SCENARIO_LIST[*]}' DURATION=${DURATION}s DELAY_MS=$DELAY_MS INTERVAL=${INTERVAL}ms THREADS=$THREADS"
echo "== temp dir: $TMP"
report begin regions- "rate limits across regions" "scenarios=${SCENARIO_LIST[*]} duration_s=$DURATION delay_ms=$DELAY_MS replicate_every_ms=$INTERVAL gateway_threads=$THREADS" --versions redis,wrk
prepare_gateway

# The parts: number of regions, the policy's rate per second and burst, replicate_every
# in ms, wrk connections per region (0: no traffic there).
declare -A PART=(
    [one]="2 100 20 $INTERVAL 16 0"
    [split50]="2 100 20 $INTERVAL 8 8"
    [split90]="2 100 20 $INTERVAL 18 2"
    [cut]="2 100 20 $INTERVAL 8 8"
    [kill]="2 100 20 $INTERVAL 8 8"
    [three]="3 100 20 $INTERVAL 16 0 0"
    [economy]="2 1000 1000 500 8 8"
    [economy1]="2 1000 1000 500 16 0"
)

# Writes the config of region R's gateway to $dir/gw-R.yaml.
gateway_config() { # dir r n
    local dir=$1 r=$2 n=$3 p
    {
        printf 'listen:\n  proxy: 127.0.0.1:%s\n  admin: 127.0.0.1:%s\n' "${GW_PORT[$r]}" "${ADMIN_PORT[$r]}"
        printf 'server:\n  threads: %s\n  grace_period: 1s\n  graceful_shutdown_timeout: 1s\n' "$THREADS"
        printf '  pid_file: %s/gw-%s.pid\n  upgrade_sock: %s/gw-%s.sock\n' "$dir" "$r" "$dir" "$r"
        printf 'access_log:\n  enabled: false\n'
        printf 'ping:\n  enabled: true\n  path: /ping\n  rate_limit: per_client\n'
        printf 'upstreams:\n  app:\n    backends:\n      - addr: 127.0.0.1:9\n'
        printf 'routes:\n  - name: app\n    path_prefix: /\n    upstream: app\n'
        printf 'rate_limits:\n  redis:\n    url: redis://127.0.0.1:%s/\n    expected_instances: 1\n' "${REDIS_PORT[$r]}"
        printf '  regions:\n    region: r%s\n    replicate_every: %sms\n    members:\n' "$r" "$EVERY"
        for ((p = 0; p < n; p++)); do
            if ((p == r)); then
                printf '      - name: r%s\n' "$p"
            else
                printf '      - name: r%s\n        redis: redis://127.0.0.1:%s/\n' "$p" "${RELAY_PORT[$r.$p]}"
            fi
        done
        printf '  policies:\n    per_client:\n      rate: %s\n      per: 1s\n      burst: %s\n      key: header:x-client\n' \
            "$RATE" "$BURST"
    } >"$dir/gw-$r.yaml"
}

snapshot() { # dir label n: /metrics of every gateway
    local dir=$1 label=$2 n=$3 r
    for ((r = 0; r < n; r++)); do
        metrics_at "${ADMIN_PORT[$r]}" >"$dir/$label-$r.metrics" 2>/dev/null || true
    done
}

run_part() { # scenario
    local s=$1 dir=$TMP/part-$1 n r p conns pids=() relays=() wrks=() t0 t1 mid0= mid1= facts=()
    read -r n RATE BURST EVERY conns <<<"${PART[$s]}"
    read -r -a conns <<<"$conns"
    mkdir -p "$dir"
    declare -gA REDIS_PORT=() GW_PORT=() ADMIN_PORT=() RELAY_PORT=()
    free_ports $((3 * n + n * (n - 1)))
    local i=0
    for ((r = 0; r < n; r++)); do
        REDIS_PORT[$r]=${PORTS[i++]} GW_PORT[$r]=${PORTS[i++]} ADMIN_PORT[$r]=${PORTS[i++]}
    done
    for ((r = 0; r < n; r++)); do
        for ((p = 0; p < n; p++)); do ((p == r)) || RELAY_PORT[$r.$p]=${PORTS[i++]}; done
    done
    for ((r = 0; r < n; r++)); do
        start_redis "redis-$s-$r" "${REDIS_PORT[$r]}"
        pids+=("${PROC_PIDS[-1]}")
    done
    for ((r = 0; r < n; r++)); do
        for ((p = 0; p < n; p++)); do
            ((p == r)) && continue
            report_bg "$dir/relay-$r.$p.log" relay "${RELAY_PORT[$r.$p]}" "${REDIS_PORT[$p]}" "$DELAY_MS" "$dir/relay-$r.$p.ready"
            relays+=("$BG")
        done
    done
    for ((r = 0; r < n; r++)); do
        gateway_config "$dir" "$r" "$n"
        gateway_check_config "gw-$s-$r" "$dir/gw-$r.yaml"
        "$GW" -c "$dir/gw-$r.yaml" >"$dir/gw-$r.log" 2>&1 &
        started "gw-$s-$r" "$!"
        pids+=("$!")
        wait_ready "gw-$s-$r" "$!" "http://127.0.0.1:${ADMIN_PORT[$r]}/healthz" "" "$dir/gw-$r.log"
    done
    local key=k-$s-$RANDOM ports
    ports=$(for ((r = 0; r < n; r++)); do printf '%s,' "${REDIS_PORT[$r]}"; done)
    report_bg "$dir/shares.log" shares "${ports%,}" "gw:rl:per_client:h:$key:rights" 0.05 "$dir/shares.tsv"
    local sampler=$BG
    echo "== $s) $n regions, $RATE/s burst $BURST, replicate_every ${EVERY}ms, wrk connections per region: ${conns[*]}, ${DELAY_MS} ms between regions"
    snapshot "$dir" before "$n"
    t0=$(now_s)
    for ((r = 0; r < n; r++)); do
        ((conns[r] > 0)) || continue
        wrk_bg "$DURATION" "$dir/wrk-$r.txt" -t1 -c"${conns[r]}" -d"${DURATION}s" -H "X-Client: $key" \
            "http://127.0.0.1:${GW_PORT[$r]}/ping"
        wrks+=("$WRK_PID")
    done
    case $s in
        one | three)
            sleep "$(calc "print $DURATION / 2")"
            mid0=$(now_s)
            snapshot "$dir" mid0 "$n"
            ;;
        cut)
            sleep "$(calc "print $DURATION / 3")"
            mid0=$(now_s)
            snapshot "$dir" mid0 "$n"
            kill -STOP "${relays[@]}"
            echo "   every link between regions frozen"
            sleep "$(calc "print $DURATION / 3")"
            snapshot "$dir" mid1 "$n"
            mid1=$(now_s)
            kill -CONT "${relays[@]}"
            echo "   links healed"
            ;;
        kill)
            sleep "$(calc "print $DURATION / 3")"
            kill -9 "${pids[1]}"
            echo "   region 1's Redis killed"
            facts+=(kill=1)
            ;;
    esac
    for p in "${wrks[@]}"; do wait_bg "$p" || true; done
    t1=$(now_s)
    [[ $s == one || $s == three ]] && { snapshot "$dir" mid1 "$n"; mid1=$t1; }
    snapshot "$dir" after "$n"
    sleep 0.3
    stop_pids "$sampler"
    bg_done "$sampler"
    facts+=(scenario="$s" regions="$n" rate="$RATE" burst="$BURST" interval_ms="$EVERY" t0="$t0" t1="$t1")
    [[ -n $mid0 ]] && facts+=(mid0="$mid0" mid1="$mid1")
    [[ $s == cut ]] && facts+=(cut0="$mid0" cut1="$mid1")
    for ((r = 0; r < n; r++)); do
        [[ -f $dir/wrk-$r.txt ]] && report wrk-line "r$r" "$dir/wrk-$r.txt"
    done
    report regions "$dir" "${facts[@]}"
    stop_pids "${relays[@]}"
    for p in "${relays[@]}"; do bg_done "$p"; done
    stop_named "gw-$s-*" "redis-$s-*"
}

for s in "${SCENARIO_LIST[@]}"; do run_part "$s"; done
find_died
finish --verdict --machine-line
