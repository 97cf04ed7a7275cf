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
#
# Knobs (environment):
#   DURATION=10         seconds of wrk in a) and b)
#   FLOOD_DURATION=5    seconds of wrk in c)
#   PHASES="a b c"      which parts, in this order (spaces or commas)
#   THREADS=2           gateway server.threads
#   ACCESS_LOG=off      gateway access log (on|off), to a file in the temp dir
#   GATEWAY_BIN=...     use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh" # SCRIPT_DIR, ROOT, GATEWAY_BIN, RESULTS_DIR, NGINX, REDIS_*, helpers

DURATION=${DURATION:-10}
FLOOD_DURATION=${FLOOD_DURATION:-5}
PHASES=${PHASES:-a b c}
THREADS=${THREADS:-2}
ACCESS_LOG=${ACCESS_LOG:-off}
IDLE_SETTLE=2    # seconds after the load before the "after" snapshot: idle leases go back
                 # to Redis after idle_return (1 s) and a sweep (every 0.5 s)

# Targets.
MAX_PER_ADMITTED=0.05 # a) EVALSHA calls and round trips per admitted request
EXACT_MIN=0.95        # b) admitted / allowed
EXACT_MAX=1.00
FLOOD_MAX_EVALSHA=10  # c) EVALSHA calls during the whole flood

require_positive DURATION FLOOD_DURATION THREADS
require_on_off ACCESS_LOG
parse_list PHASES PHASE_LIST phase "a b c"
require_tools wrk curl python3 timeout "$NGINX" "$REDIS_SERVER" "$REDIS_CLI"

# ---------------------------------------------------------------- processes & cleanup
on_cleanup() { rm -f "$TMP"/*-access.log; } # (called by lib.sh's cleanup)
setup_tmp gateway-ratelimit "configs, logs, raw wrk outputs"

# ---------------------------------------------------------------- set-up
echo "== rate limiter test: PHASES='${PHASE_LIST[*]}' DURATION=${DURATION}s FLOOD_DURATION=${FLOOD_DURATION}s THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG"
echo "== temp dir: $TMP"
show_load start
LOAD_START=$(load_avg)

prepare_gateway

# Fourteen distinct free loopback ports: upstream, Redis, and a proxy + admin port
# for each of six gateways.
free_ports 14
P_UPSTREAM=${PORTS[0]}
P_REDIS=${PORTS[1]}
declare -A PORT ADMIN_PORT
i=2
for g in gw-a gw-b1 gw-b2 gw-b3 gw-b4 gw-c; do
    PORT[$g]=${PORTS[i]}
    ADMIN_PORT[$g]=${PORTS[i + 1]}
    i=$(( i + 2 ))
done

start_upstream() {
    start_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
    echo "== nginx-upstream: nginx on 127.0.0.1:$P_UPSTREAM"
}

# Renders, validates and starts one gateway with Redis and one policy; waits for
# /readyz, then checks that a request (X-Client: CHECK_KEY) is proxied ("ok") and
# went through the limiter (RateLimit header) without a fallback.
start_gateway() { # name policy rate per burst instances check-key
    local name=$1 policy=$2 conf=$TMP/$1.yaml log=$TMP/$1.log enabled=true pid hdrs body rl snap s
    [[ $ACCESS_LOG == on ]] || enabled=false
    render "$SCRIPT_DIR/gateway.yaml.tmpl" "$conf" +LIMITED +REDIS DIR="$TMP" NAME="$name" \
        PORT="${PORT[$name]}" ADMIN_PORT="${ADMIN_PORT[$name]}" THREADS="$THREADS" \
        UPSTREAM_PORT="$P_UPSTREAM" REDIS_PORT="$P_REDIS" \
        ACCESS_LOG_ENABLED="$enabled" ACCESS_LOG_FILE="$TMP/$name-access.log" \
        POLICY="$policy" RATE="$3" PER="$4" BURST="$5" INSTANCES="$6" KEY="header:X-Client"
    gateway_check_config "$name" "$conf"
    gateway_launch "$name" "${ADMIN_PORT[$name]}"
    pid=$GW_PID
    hdrs=$TMP/check-$name.headers
    body=$(curl -sS --max-time 5 -D "$hdrs" -H "X-Client: $7" "http://127.0.0.1:${PORT[$name]}/loadtest-check") \
        || die "$name check request failed"
    [[ $body == ok ]] || die "$name check: expected body 'ok', got '$body' (headers in $hdrs)"
    rl=$(awk 'tolower($1) == "ratelimit:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rl ]] || die "$name check: no RateLimit response header: is the limiter on? (headers in $hdrs)"
    snap=$(snapshot "$name")
    read -r -a s <<<"$snap"
    (( s[2] == 0 )) || die "$name check: a fallback decision: Redis not used (see $log)"
    (( s[3] > 0 )) || die "$name check: no Redis round trip in /metrics"
    echo "== $name: pid $pid on 127.0.0.1:${PORT[$name]} (admin ${ADMIN_PORT[$name]}), policy $policy: $3 per $4, burst $5; check ok, RateLimit: $rl"
}

# "allowed limited fallback round_trips status_429 status_5xx requests redis_errors",
# summed over the given gateways' /metrics.
snapshot() { # gateway...
    local g m
    for g in "$@"; do
        m=$(metrics_at "${ADMIN_PORT[$g]}") \
            || die "could not read $g's /metrics"
        printf '%s\n' "$m"
    done | awk '
        /^gateway_ratelimit_decisions_total\{/ && /outcome="allowed"/ { a += $NF }
        /^gateway_ratelimit_decisions_total\{/ && /outcome="limited"/ { l += $NF }
        /^gateway_ratelimit_decisions_total\{/ && /outcome="fallback"/ { f += $NF }
        /^gateway_ratelimit_redis_round_trips_total / { t += $NF }
        /^gateway_ratelimit_redis_errors_total / { e += $NF }
        /^gateway_requests_total\{/ { n += $NF }
        /^gateway_requests_total\{/ && /status="429"/ { r429 += $NF }
        /^gateway_requests_total\{/ && /status="5[0-9][0-9]"/ { r5 += $NF }
        END { printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", a, l, f, t, r429, r5, n, e }'
}
# after - before, field by field
delta() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) printf "%.0f%s", y[i] - x[i], (i < n ? " " : "\n") }'; }
# field-by-field sum of two snapshots or deltas
vadd() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(b, y, " "); split(a, x, " "); for (i = 1; i <= n; i++) printf "%.0f%s", x[i] + y[i], (i < n ? " " : "\n") }'; }

HOT_LUA=$TMP/hot.lua
printf 'wrk.headers["X-Client"] = "hot"\n' >"$HOT_LUA"

# Starts wrk (X-Client: hot) in the background; its pid is appended to WRK_PIDS.
WRK_PIDS=()
start_wrk() { # threads connections seconds url outfile
    wrk_bg "$3" "$5" -t"$1" -c"$2" -d"$3"s -s "$HOT_LUA" "$4"
    WRK_PIDS+=("$WRK_PID")
}
# Waits for every started wrk; fails if one failed.
wait_wrks() {
    local pid rc=0
    for pid in "${WRK_PIDS[@]}"; do wait_bg "$pid" || rc=$?; done
    WRK_PIDS=()
    return "$rc"
}

start_upstream
start_redis redis "$P_REDIS"

summary_init

# ---------------------------------------------------------------- a) economy
phase_a() {
    echo "== a) Redis economy: 1 gateway, 1000/s burst 1000 per X-Client; wrk -t2 -c16 -d${DURATION}s, X-Client: hot"
    start_gateway gw-a economy 1000 1s 1000 1 check-a
    local before after e0 e1 t0 t1 out=$TMP/wrk-a.txt
    local allowed limited fallback trips r429 r5xx rerr reqs rps non2xx sockerr
    before=$(snapshot gw-a)
    e0=$(redis_evalsha_calls)
    t0=$(now_s)
    start_wrk 2 16 "$DURATION" "http://127.0.0.1:${PORT[gw-a]}/" "$out"
    wait_wrks || echo "   wrk exited non-zero (output in $out)" >&2
    t1=$(now_s)
    sleep "$IDLE_SETTLE" # count the lease given back when the key goes idle
    after=$(snapshot gw-a)
    e1=$(redis_evalsha_calls)
    read -r allowed limited fallback trips r429 r5xx _ rerr <<<"$(delta "$before" "$after")"
    read -r rps _ _ non2xx sockerr reqs < <(parse_wrk "$out")
    local evalsha=$(( e1 - e0 ))
    local elapsed per_eval per_trip adm_s allowed_max
    elapsed=$(calc "printf \"%.3f\", $t1 - $t0")
    adm_s=$(calc "printf \"%.1f\", $allowed / $elapsed")
    allowed_max=$(calc "printf \"%.0f\", 1000 + 1000 * $elapsed")
    per_eval=$(calc "printf \"%.4f\", ($allowed > 0 ? $evalsha / $allowed : -1)")
    per_trip=$(calc "printf \"%.4f\", ($allowed > 0 ? $trips / $allowed : -1)")
    local ok_e ok_t v_e v_t
    ok_e=$(calc "print ($allowed > 0 && $per_eval < $MAX_PER_ADMITTED ? 1 : 0)")
    ok_t=$(calc "print ($allowed > 0 && $per_trip < $MAX_PER_ADMITTED ? 1 : 0)")
    verdict "$ok_e" a-evalsha; v_e=$V
    verdict "$ok_t" a-round-trips; v_t=$V
    sum "## a) Redis economy (1 gateway, policy 1000/s burst 1000, key X-Client: hot, wrk -t2 -c16 -d${DURATION}s)"
    sum "   offered:          $reqs requests in ${elapsed}s ($rps req/s by wrk), socket errors $sockerr"
    sum "   admitted:         $allowed ($adm_s/s), of at most $allowed_max = burst 1000 + 1000/s x ${elapsed}s (admitted/allowed $(calc "printf \"%.4f\", $allowed / $allowed_max"))"
    sum "   rejected:         limited $limited (429 by /metrics $r429, non-2xx by wrk $non2xx), fallback $fallback, 5xx $r5xx"
    sum "   EVALSHA calls:    $evalsha  ->  evalsha per admitted request     $per_eval  (target < $MAX_PER_ADMITTED: $v_e)"
    sum "   round trips:      $trips  ->  round trips per admitted request $per_trip  (target < $MAX_PER_ADMITTED: $v_t), Redis errors $rerr"
    stop_named gw-a
}

# ---------------------------------------------------------------- b) exactness
phase_b() {
    local gws=(gw-b1 gw-b2 gw-b3 gw-b4) g i
    echo "== b) exactness: 4 gateways sharing one bucket, 1000/s burst 100 per X-Client; 4 x wrk -t1 -c8 -d${DURATION}s at once"
    for i in "${!gws[@]}"; do start_gateway "${gws[i]}" exact 1000 1s 100 4 "check-b$((i + 1))"; done
    local e0 e1 t0 t1 snap
    local allowed limited fallback trips r429 r5xx rerr
    declare -A before=()
    for g in "${gws[@]}"; do before[$g]=$(snapshot "$g"); done
    e0=$(redis_evalsha_calls)
    t0=$(now_s)
    for g in "${gws[@]}"; do start_wrk 1 8 "$DURATION" "http://127.0.0.1:${PORT[$g]}/" "$TMP/wrk-b-$g.txt"; done
    wait_wrks || echo "   a wrk exited non-zero (outputs in $TMP/wrk-b-*.txt)" >&2
    t1=$(now_s)
    # The admitted counts are final once wrk is done; the snapshot waits anyway, so
    # that the round trips include the leases given back.
    sleep "$IDLE_SETTLE"
    local total="0 0 0 0 0 0 0 0" d reqs=0 non2xx=0 sockerr=0 r n se per_gw=()
    for g in "${gws[@]}"; do
        snap=$(snapshot "$g")
        d=$(delta "${before[$g]}" "$snap")
        total=$(vadd "$total" "$d")
        per_gw+=("$g ${d%% *}")
        read -r _ _ _ n se r < <(parse_wrk "$TMP/wrk-b-$g.txt")
        [[ $r == NA ]] || reqs=$(( reqs + r ))
        non2xx=$(( non2xx + n ))
        sockerr=$(( sockerr + se ))
    done
    e1=$(redis_evalsha_calls)
    read -r allowed limited fallback trips r429 r5xx _ rerr <<<"$total"
    local elapsed allowed_max ratio ok_r v_r v_f v_5
    elapsed=$(calc "printf \"%.3f\", $t1 - $t0")
    allowed_max=$(calc "printf \"%.0f\", 100 + 1000 * $elapsed")
    ratio=$(calc "printf \"%.4f\", $allowed / $allowed_max")
    ok_r=$(calc "print ($ratio >= $EXACT_MIN && $ratio <= $EXACT_MAX ? 1 : 0)")
    verdict "$ok_r" b-exactness; v_r=$V
    verdict $(( fallback == 0 ? 1 : 0 )) b-fallback; v_f=$V
    verdict $(( r5xx == 0 ? 1 : 0 )) b-5xx; v_5=$V
    sum "## b) exactness (4 gateways, one Redis, policy 1000/s burst 100, key X-Client: hot, 4 x wrk -t1 -c8 -d${DURATION}s)"
    sum "   offered:          $reqs requests in ${elapsed}s, socket errors $sockerr"
    sum "   admitted:         $allowed over the 4 instances ($(IFS=,; echo "${per_gw[*]}" | sed 's/,/, /g'))"
    sum "   allowed:          $allowed_max = burst 100 + 1000/s x ${elapsed}s"
    sum "   admitted/allowed: $ratio  (target $EXACT_MIN..$EXACT_MAX: $v_r)"
    sum "   fallback:         $fallback  (target 0: $v_f), Redis errors $rerr"
    sum "   5xx:              $r5xx  (target 0: $v_5); limited $limited (429 by /metrics $r429, non-2xx by wrk $non2xx)"
    sum "   EVALSHA calls:    $(( e1 - e0 )), round trips $trips ($(calc "printf \"%.4f\", ($allowed > 0 ? $trips / $allowed : -1)") per admitted request)"
    stop_named "${gws[@]}"
}

# ---------------------------------------------------------------- c) flood
phase_c() {
    echo "== c) flood on an exhausted key: 1 per 1h, burst 1; wrk -t2 -c16 -d${FLOOD_DURATION}s, X-Client: hot"
    start_gateway gw-c flood 1 1h 1 1 check-c
    local before after e0 e1 out=$TMP/wrk-c.txt
    local allowed limited fallback trips r429 r5xx rerr reqs rps non2xx sockerr
    before=$(snapshot gw-c)
    e0=$(redis_evalsha_calls)
    start_wrk 2 16 "$FLOOD_DURATION" "http://127.0.0.1:${PORT[gw-c]}/" "$out"
    wait_wrks || echo "   wrk exited non-zero (output in $out)" >&2
    sleep "$IDLE_SETTLE"
    after=$(snapshot gw-c)
    e1=$(redis_evalsha_calls)
    read -r allowed limited fallback trips r429 r5xx _ rerr <<<"$(delta "$before" "$after")"
    read -r rps _ _ non2xx sockerr reqs < <(parse_wrk "$out")
    local evalsha=$(( e1 - e0 )) v_e
    verdict $(( evalsha <= FLOOD_MAX_EVALSHA ? 1 : 0 )) c-evalsha; v_e=$V
    sum "## c) flood on an exhausted key (1 gateway, policy 1 per 1h burst 1, key X-Client: hot, wrk -t2 -c16 -d${FLOOD_DURATION}s)"
    sum "   requests:         $reqs ($rps req/s by wrk), socket errors $sockerr"
    sum "   429s:             $r429 by /metrics, $non2xx non-2xx by wrk; admitted $allowed (the burst: 1), fallback $fallback, 5xx $r5xx"
    sum "   EVALSHA calls:    $evalsha  (target <= $FLOOD_MAX_EVALSHA: $v_e), round trips $trips, Redis errors $rerr"
    stop_named gw-c
}

for p in "${PHASE_LIST[@]}"; do "phase_$p"; done

# Anything dead that should not be (Redis, the upstream) invalidates the run.
find_died
for f in "$TMP"/gw-*.log; do
    [[ -f $f ]] || continue
    log_summary "$(basename "$f" .log)" "$f" 4
done
show_load end

sum_verdict

results_begin ratelimit-
{
    results_header "gateway rate limiter test" \
        "phases=${PHASE_LIST[*]} duration_s=$DURATION flood_duration_s=$FLOOD_DURATION gateway_threads=$THREADS access_log=$ACCESS_LOG idle_settle_s=$IDLE_SETTLE" \
        "cpus=$(nproc) redis=$(redis_version) wrk=$(wrk_version)"
    (( ${#DIED[@]} == 0 )) || echo "died_during_run=${DIED[*]}"
    echo "tmp_dir=$TMP"
    cat "$SUMMARY"
} >"$RESULT"
echo
echo "== summary"
cat "$SUMMARY"
echo "== summary written to $RESULT"
