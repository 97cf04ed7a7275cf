#!/usr/bin/env bash
# Rate limiter with Redis: its Redis economy and its exactness, measured with the
# release binary on loopback. See loadtest/README.md ("Rate limiter: ratelimit.sh").
#
#   a) economy: one gateway, policy 1000/s burst 1000 on header X-Client, offered
#      far more than 1000 req/s of one key: Redis EVALSHA calls and lease round
#      trips per admitted request (target < 0.05), admitted/s.
#   b) exactness: four gateways sharing one bucket (1000/s, burst 100), one wrk each
#      at once: admitted over the four / (burst + rate x elapsed), target 0.95..1.00.
#   c) flood on an exhausted key (1 per hour, burst 1): requests, 429s, EVALSHA calls.
#   d) Redis far away: two gateways (100/s, burst 20) reach Redis through a relay that
#      delays every byte by each of DELAYS ms one way; admitted/allowed (target <= 1.00),
#      fallback decisions (target 0), decisions by reason, latency by wrk.
#   e) Redis lost: the two gateways of d) on a Redis of their own, which is killed -9
#      KILL_AT s into the load and restarted empty RESTART_AFTER s later: admitted/allowed
#      across the whole run (target <= 1.00), fallback decisions (reported), 5xx (target 0).
#
# Knobs (environment):
#   DURATION=10         seconds of wrk in a) and b)
#   FLOOD_DURATION=5    seconds of wrk in c)
#   PHASES="a b c d"    which parts, in this order (spaces or commas)
#   DELAYS="0 5 25 50 100"  d): one-way delays to Redis, in ms
#   KILL_AT=5 RESTART_AFTER=2   e): when Redis is killed, and how long it stays down (s)
#   THREADS=2           gateway server.threads
#   ACCESS_LOG=off      gateway access log (on|off), to a file in the temp dir
#   GATEWAY_BIN=...     use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh" # SCRIPT_DIR, ROOT, GATEWAY_BIN, RESULTS_DIR, NGINX, REDIS_*, helpers

DURATION=${DURATION:-10}
FLOOD_DURATION=${FLOOD_DURATION:-5}
PHASES=${PHASES:-a b c d e}
DELAYS=${DELAYS:-0 5 25 50 100}
KILL_AT=${KILL_AT:-5}
RESTART_AFTER=${RESTART_AFTER:-2}
THREADS=${THREADS:-2}
ACCESS_LOG=${ACCESS_LOG:-off}
IDLE_SETTLE=2    # seconds after the load before the "after" snapshot: idle leases go back
                 # to Redis after idle_return (1 s) and a sweep (every 0.5 s)
# (The targets, and what each part reports, are in report.py's cmd_ratelimit.)

require_positive DURATION FLOOD_DURATION THREADS
require_on_off ACCESS_LOG
parse_list PHASES PHASE_LIST phase "a b c d e"
require_positive KILL_AT RESTART_AFTER
(( KILL_AT + RESTART_AFTER < DURATION )) || die "KILL_AT + RESTART_AFTER must be less than DURATION ($DURATION)"
require_tools wrk curl python3 timeout "$NGINX" "$REDIS_SERVER" "$REDIS_CLI"

# ---------------------------------------------------------------- processes & cleanup
on_cleanup() { rm -f "$TMP"/*-access.log; } # (called by lib.sh's cleanup)
setup_tmp gateway-ratelimit "configs, logs, raw wrk outputs"

# ---------------------------------------------------------------- set-up
echo "== rate limiter test: PHASES='${PHASE_LIST[*]}' DURATION=${DURATION}s FLOOD_DURATION=${FLOOD_DURATION}s THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG"
echo "== temp dir: $TMP"
report begin ratelimit- "gateway rate limiter test" "phases=${PHASE_LIST[*]} duration_s=$DURATION flood_duration_s=$FLOOD_DURATION gateway_threads=$THREADS access_log=$ACCESS_LOG idle_settle_s=$IDLE_SETTLE" --versions redis,wrk

prepare_gateway

# The parts, one line each: policy (name rate per burst expected_instances), wrk on each
# gateway at once (threads connections seconds), the gateways (all sharing the policy
# and the Redis).
declare -A PART=(
    [a]="economy 1000 1s 1000 1   2 16 $DURATION         gw-a"
    [b]="exact   1000 1s 100  4   1 8  $DURATION         gw-b1 gw-b2 gw-b3 gw-b4"
    [c]="flood   1    1h 1    1   2 16 $FLOOD_DURATION   gw-c"
)
# d): one part per delay, each its own pair of gateways behind its own relay.
PARTS=()
for p in "${PHASE_LIST[@]}"; do
    if [[ $p == d ]]; then
        for ms in $DELAYS; do
            is_uint "$ms" || die "DELAYS: '$ms' is not a whole number of milliseconds"
            PART[d$ms]="far 100 1s 20 2 1 16 $DURATION gw-d${ms}a gw-d${ms}b"
            PARTS+=("d$ms")
        done
    elif [[ $p == e ]]; then
        PART[e]="lost 100 1s 20 2 1 16 $DURATION gw-e1 gw-e2"
        PARTS+=(e)
    else
        PARTS+=("$p")
    fi
done

# Distinct free loopback ports: upstream, Redis, and a proxy + admin port per gateway.
GATEWAYS=()
for p in "${PARTS[@]}"; do read -r -a f <<<"${PART[$p]}"; GATEWAYS+=("${f[@]:8}"); done
free_ports $(( 3 + 2 * ${#GATEWAYS[@]} + ${#PARTS[@]} ))
P_UPSTREAM=${PORTS[0]}
P_REDIS=${PORTS[1]}
declare -A PORT ADMIN_PORT
for i in "${!GATEWAYS[@]}"; do
    PORT[${GATEWAYS[i]}]=${PORTS[2 + 2 * i]}
    ADMIN_PORT[${GATEWAYS[i]}]=${PORTS[3 + 2 * i]}
done
declare -A RELAY_PORT
for i in "${!PARTS[@]}"; do RELAY_PORT[${PARTS[i]}]=${PORTS[2 + 2 * ${#GATEWAYS[@]} + i]}; done
P_REDIS_E=${PORTS[2 + 2 * ${#GATEWAYS[@]} + ${#PARTS[@]}]}  # e)'s own Redis, killed mid-run
REDIS_VIA=        # the port the gateways being started reach Redis on (a relay's in d)

start_upstream() {
    start_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
    echo "== nginx-upstream: nginx on 127.0.0.1:$P_UPSTREAM"
}

# Renders, validates and starts one gateway with Redis and one policy; waits for
# /readyz, then checks that a request (X-Client: check-NAME, so that the hot bucket
# starts full) is proxied ("ok") and went through the limiter (RateLimit header)
# without a fallback, with a Redis round trip.
start_gateway() { # name policy rate per burst instances
    local name=$1 policy=$2 conf=$TMP/$1.yaml log=$TMP/$1.log m=$TMP/$1-check.metrics enabled=true hdrs body rl
    [[ $ACCESS_LOG == on ]] || enabled=false
    render "$SCRIPT_DIR/gateway.yaml.tmpl" "$conf" +LIMITED +REDIS DIR="$TMP" NAME="$name" \
        PORT="${PORT[$name]}" ADMIN_PORT="${ADMIN_PORT[$name]}" THREADS="$THREADS" \
        UPSTREAM_PORT="$P_UPSTREAM" REDIS_PORT="${REDIS_VIA:-$P_REDIS}" \
        ACCESS_LOG_ENABLED="$enabled" ACCESS_LOG_FILE="$TMP/$name-access.log" \
        POLICY="$policy" RATE="$3" PER="$4" BURST="$5" INSTANCES="$6" KEY="header:X-Client"
    gateway_check_config "$name" "$conf"
    gateway_launch "$name" "${ADMIN_PORT[$name]}"
    hdrs=$TMP/check-$name.headers
    # A cold key waits lease_wait (100 ms) for its first lease: with Redis further away than
    # that, the first answer is 429 (no lease yet) and a later one is served from the lease.
    local try
    for try in 1 2 3 4 5; do
        body=$(curl -sS --max-time 5 -D "$hdrs" -H "X-Client: check-$name" "http://127.0.0.1:${PORT[$name]}/loadtest-check") \
            || die "$name check request failed"
        [[ $body == ok ]] && break
        sleep 0.3
    done
    [[ $body == ok ]] || die "$name check: expected body 'ok', got '$body' (headers in $hdrs)"
    rl=$(report header "$hdrs" ratelimit)
    [[ -n $rl ]] || die "$name check: no RateLimit response header: is the limiter on? (headers in $hdrs)"
    metrics_at "${ADMIN_PORT[$name]}" >"$m" || die "could not read $name's /metrics"
    # (Behind a relay, a build that falls back after lease_wait may do so on the check's
    # cold key; part d counts fallbacks from its own snapshots.)
    [[ -n $REDIS_VIA || $(report metric "$m" 'gateway_ratelimit_decisions_total{outcome="fallback"}') == 0 ]] \
        || die "$name check: a fallback decision: Redis not used (see $log)"
    (( $(report metric "$m" gateway_ratelimit_redis_round_trips_total) > 0 )) || die "$name check: no Redis round trip in /metrics"
    echo "== $name: pid $GW_PID on 127.0.0.1:${PORT[$name]} (admin ${ADMIN_PORT[$name]}), policy $policy: $3 per $4, burst $5; check ok, RateLimit: $rl"
}

# The gateways' /metrics and Redis's INFO commandstats, into DIR/WHEN-GATEWAY.metrics
# and DIR/WHEN.redis.
snapshot() { # dir when gateway...
    local g
    for g in "${@:3}"; do
        metrics_at "${ADMIN_PORT[$g]}" >"$1/$2-$g.metrics" || die "could not read $g's /metrics"
    done
    redis_info >"$1/$2.redis"
}

# e): kills e's Redis (-9, no persistence: its data is gone) KILL_AT s into the load and
# starts an empty one on the same port RESTART_AFTER s later.
lose_redis() {
    local i
    sleep "$KILL_AT"
    for i in "${!PROC_NAMES[@]}"; do
        [[ ${PROC_NAMES[i]} == redis-e ]] && kill -KILL "${PROC_PIDS[i]}" 2>/dev/null
    done
    stop_named redis-e # (reaps it, and forgets it)
    echo "== e) Redis killed -9 at ${KILL_AT}s"
    sleep "$RESTART_AFTER"
    start_redis redis-e "$P_REDIS_E"
    echo "== e) Redis restarted empty after ${RESTART_AFTER}s"
}

HOT_LUA=$TMP/hot.lua
printf 'wrk.headers["X-Client"] = "hot"\n' >"$HOT_LUA"

start_upstream
start_redis redis "$P_REDIS"

# ---------------------------------------------------------------- the parts
# One part: start its gateways, snapshot, one wrk (X-Client: hot) per gateway at once,
# IDLE_SETTLE s (so that the leases given back by the idle key are counted), snapshot;
# report.py reports it from the files in $TMP/part-P.
run_part() { # a|b|c|dMS
    local p=$1 dir=$TMP/part-$1 f gws g t0 t1 rc=0 pids=() pid relay= facts=()
    read -r -a f <<<"${PART[$p]}"
    gws=("${f[@]:8}")
    mkdir -p "$dir"
    REDIS_VIA=
    if [[ $p == d* ]]; then
        report_bg "$TMP/relay-$p.log" relay "${RELAY_PORT[$p]}" "$P_REDIS" "${p#d}" "$dir/relay.ready"
        relay=$BG
        local i
        for i in $(seq 50); do [[ -s $dir/relay.ready ]] && break; sleep 0.1; done
        [[ -s $dir/relay.ready ]] || die "relay for $p did not start (see $TMP/relay-$p.log)"
        REDIS_VIA=${RELAY_PORT[$p]}
        facts=(delay_ms="${p#d}")
        echo "== $p) relay 127.0.0.1:$REDIS_VIA -> Redis 127.0.0.1:$P_REDIS, ${p#d} ms each way"
    elif [[ $p == e ]]; then
        start_redis redis-e "$P_REDIS_E"
        REDIS_VIA=$P_REDIS_E
        facts=(kill_at="$KILL_AT" restart_after="$RESTART_AFTER")
    fi
    echo "== $p) ${#gws[@]} gateway(s), policy ${f[0]}: ${f[1]} per ${f[2]}, burst ${f[3]}, key X-Client; ${#gws[@]} x wrk -t${f[5]} -c${f[6]} -d${f[7]}s, X-Client: hot"
    for g in "${gws[@]}"; do start_gateway "$g" "${f[@]:0:5}"; done
    snapshot "$dir" before "${gws[@]}"
    t0=$(now_s)
    for g in "${gws[@]}"; do
        wrk_bg "${f[7]}" "$dir/wrk-$g.txt" -t"${f[5]}" -c"${f[6]}" -d"${f[7]}"s --latency -s "$HOT_LUA" "http://127.0.0.1:${PORT[$g]}/"
        pids+=("$WRK_PID")
    done
    [[ $p == e ]] && lose_redis
    for pid in "${pids[@]}"; do wait_bg "$pid" || rc=$?; done
    t1=$(now_s)
    (( rc == 0 )) || echo "   a wrk exited non-zero (outputs in $dir/wrk-*.txt)" >&2
    sleep "$IDLE_SETTLE"
    snapshot "$dir" after "${gws[@]}"
    report ratelimit "${p:0:1}" "$dir" rate="${f[1]}" per="${f[2]}" burst="${f[3]}" threads="${f[5]}" conns="${f[6]}" \
        seconds="${f[7]}" t0="$t0" t1="$t1" "${facts[@]}"
    stop_named "${gws[@]}"
    [[ $p == e ]] && stop_named redis-e
    if [[ -n $relay ]]; then stop_pids "$relay"; bg_done "$relay"; fi
}

for p in "${PARTS[@]}"; do run_part "$p"; done

# Anything dead that should not be (Redis, the upstream) invalidates the run.
find_died
report logs "$TMP"/gw-*.log
finish --verdict --echo-summary
