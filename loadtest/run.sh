#!/usr/bin/env bash
# Load test: the gateway (full, with the rate limiter on, with JWT auth, and --bare)
# against nginx as a reverse proxy (plain and with limit_req), all in front of the
# same nginx upstream, on loopback. See loadtest/README.md.
#
# Knobs (environment):
#   DURATION=8        seconds per wrk run
#   ROUNDS=3          interleaved rounds (each round runs every target once)
#   CONNECTIONS=64    wrk connections
#   WRK_THREADS=2     wrk threads
#   THREADS=2         gateway server.threads
#   TARGETS="upstream nginx nginx-limited gateway gateway-limited gateway-limited-redis
#            gateway-jwt-hs gateway-jwt-rs gateway-bare"
#                     subset/order (spaces or commas)
#   ACCESS_LOG=on     gateway access log (on|off), written to a file in the temp dir
#   KEEP_ACCESS_LOG=0 keep the access-log files after the run (they can be hundreds of MB)
#   WARMUP=1          seconds of unrecorded wrk per target before round 1 (0: none)
#   GATEWAY_BIN=...   use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh" # SCRIPT_DIR, ROOT, GATEWAY_BIN, RESULTS_DIR, NGINX, REDIS_*, helpers

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
THREADS=${THREADS:-2}
ALL_TARGETS="upstream nginx nginx-limited gateway gateway-limited gateway-limited-redis gateway-jwt-hs gateway-jwt-rs gateway-bare"
TARGETS=${TARGETS:-$ALL_TARGETS}
ACCESS_LOG=${ACCESS_LOG:-on}
KEEP_ACCESS_LOG=${KEEP_ACCESS_LOG:-0}
WARMUP=${WARMUP:-1}
OPENSSL=${OPENSSL:-$(command -v openssl || echo /usr/bin/openssl)}

require_positive DURATION ROUNDS CONNECTIONS WRK_THREADS THREADS
is_uint "$WARMUP" || die "WARMUP must be a whole number of seconds, got '$WARMUP'"
require_on_off ACCESS_LOG
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS

parse_list TARGETS TARGET_LIST target "$ALL_TARGETS"
want() { local t; for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
# The full gateways (with /metrics, request ids, access log), in the default order.
FULL_GATEWAYS=()
for t in gateway gateway-limited gateway-limited-redis gateway-jwt-hs gateway-jwt-rs; do
    if want "$t"; then FULL_GATEWAYS+=("$t"); fi
done
is_jwt() { [[ $1 == gateway-jwt-* ]]; }
is_limited() { [[ $1 == gateway-limited* ]]; }

tools=(wrk curl python3 timeout "$NGINX")
if want gateway-limited-redis; then tools+=("$REDIS_SERVER" "$REDIS_CLI"); fi
if want gateway-jwt-rs; then tools+=("$OPENSSL"); fi
require_tools "${tools[@]}"

# ---------------------------------------------------------------- processes & cleanup
on_cleanup() { # (called by lib.sh's cleanup, after every process has stopped)
    if [[ $KEEP_ACCESS_LOG != 1 ]]; then
        rm -f "$TMP"/gateway*-access.log
    fi
}
setup_tmp gateway-loadtest "raw wrk outputs, configs, logs"

# ---------------------------------------------------------------- set-up
echo "== gateway load test: DURATION=${DURATION}s ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG TARGETS='${TARGET_LIST[*]}'"
echo "== temp dir: $TMP"
show_load start
show_top
LOAD_START=$(load_avg)

if (( ${#FULL_GATEWAYS[@]} > 0 )) || want gateway-bare; then prepare_gateway; fi

# Sixteen distinct free loopback ports.
free_ports 16
read -r P_UPSTREAM P_NGINX P_NGINX_LIM P_GW P_GW_ADMIN P_BARE P_BARE_ADMIN \
    P_GWL P_GWL_ADMIN P_GWLR P_GWLR_ADMIN P_REDIS \
    P_JWTHS P_JWTHS_ADMIN P_JWTRS P_JWTRS_ADMIN <<<"${PORTS[*]}"
declare -A PORT=(
    [upstream]=$P_UPSTREAM [nginx]=$P_NGINX [nginx-limited]=$P_NGINX_LIM
    [gateway]=$P_GW [gateway-limited]=$P_GWL [gateway-limited-redis]=$P_GWLR
    [gateway-jwt-hs]=$P_JWTHS [gateway-jwt-rs]=$P_JWTRS [gateway-bare]=$P_BARE
)
declare -A ADMIN_PORT=(
    [gateway]=$P_GW_ADMIN [gateway-limited]=$P_GWL_ADMIN [gateway-limited-redis]=$P_GWLR_ADMIN
    [gateway-jwt-hs]=$P_JWTHS_ADMIN [gateway-jwt-rs]=$P_JWTRS_ADMIN [gateway-bare]=$P_BARE_ADMIN
)

# ---------------------------------------------------------------- JWT targets
# One token per JWT target, minted here and reused by every request (so after the
# first request the gateway answers from its cache of verified tokens).
JWT_ISSUER=https://issuer.test
JWT_AUDIENCE=api
JWT_SECRET=loadtest-hs256-secret-not-for-production-0123456789 # >= 32 bytes (RFC 7518)
JWT_PRIVATE_KEY=$ROOT/tests/fixtures/rsa-private.pem
JWT_PUBLIC_KEY=$ROOT/tests/fixtures/rsa-public.pem
declare -A TOKEN=() # target -> its bearer token (the JWT targets only)
b64url() { python3 -c 'import base64, sys; sys.stdout.write(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())'; }
jwt_signing_input() { # alg kid exp: base64url(header).base64url(claims)
    python3 -c '
import base64, json, sys
alg, kid, exp, iss, aud = sys.argv[1:]
def enc(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()
sys.stdout.write(enc({"alg": alg, "typ": "JWT", "kid": kid}) + "." +
                 enc({"sub": "loadtest", "iss": iss, "aud": aud, "exp": int(exp)}))' "$@" "$JWT_ISSUER" "$JWT_AUDIENCE"
}
make_jwt() { # HS256|RS256 exp: a signed token on stdout
    local input sig
    case $1 in
        HS256)
            input=$(jwt_signing_input HS256 hs "$2")
            sig=$(printf '%s' "$input" | JWT_SECRET=$JWT_SECRET python3 -c '
import base64, hashlib, hmac, os, sys
mac = hmac.new(os.environ["JWT_SECRET"].encode(), sys.stdin.buffer.read(), hashlib.sha256).digest()
sys.stdout.write(base64.urlsafe_b64encode(mac).rstrip(b"=").decode())')
            ;;
        RS256)
            input=$(jwt_signing_input RS256 rs "$2")
            sig=$(printf '%s' "$input" | "$OPENSSL" dgst -sha256 -sign "$JWT_PRIVATE_KEY" -binary | b64url)
            ;;
    esac
    [[ -n $input && -n $sig ]] || die "could not sign a $1 token"
    printf '%s.%s\n' "$input" "$sig"
}
if want gateway-jwt-hs || want gateway-jwt-rs; then
    # exp = now + 1 h, or later when the run could outlast that (a token expiring
    # mid-run would turn every later request into a 401).
    jwt_life=$(( (WARMUP + ROUNDS * DURATION) * ${#TARGET_LIST[@]} + 600 ))
    (( jwt_life >= 3600 )) || jwt_life=3600
    jwt_exp=$(( $(date +%s) + jwt_life ))
    if want gateway-jwt-hs; then TOKEN[gateway-jwt-hs]=$(make_jwt HS256 "$jwt_exp"); fi
    if want gateway-jwt-rs; then
        [[ -r $JWT_PRIVATE_KEY && -r $JWT_PUBLIC_KEY ]] || die "RSA test keys not found: $JWT_PRIVATE_KEY, $JWT_PUBLIC_KEY"
        TOKEN[gateway-jwt-rs]=$(make_jwt RS256 "$jwt_exp")
    fi
    echo "== JWT tokens: iss $JWT_ISSUER, aud $JWT_AUDIENCE, sub loadtest, exp $jwt_exp (in ${jwt_life}s)"
fi
auth_header() { # target: its Authorization header line, or nothing
    if [[ -n ${TOKEN[$1]:-} ]]; then echo "Authorization: Bearer ${TOKEN[$1]}"; fi
}

run_nginx() { # name port template [extra KEY=VALUE | +SECTION...]
    local name=$1 port=$2
    start_nginx "$@"
    echo "== $name: nginx pid $(cat "$TMP/$name.pid" 2>/dev/null || echo '?') on 127.0.0.1:$port"
}

gateway_conf() { # name port admin-port [+SECTION...]: renders and validates $TMP/name.yaml
    local name=$1 port=$2 admin=$3 conf=$TMP/$1.yaml enabled=true
    shift 3
    [[ $ACCESS_LOG == on ]] || enabled=false
    render "$SCRIPT_DIR/gateway.yaml.tmpl" "$conf" DIR="$TMP" NAME="$name" PORT="$port" \
        ADMIN_PORT="$admin" THREADS="$THREADS" UPSTREAM_PORT="$P_UPSTREAM" REDIS_PORT="$P_REDIS" \
        ACCESS_LOG_ENABLED="$enabled" ACCESS_LOG_FILE="$TMP/$name-access.log" "$@"
    gateway_check_config "$name" "$conf"
}

start_gateway() { # name port admin-port [--bare]
    local name=$1 port=$2 admin=$3 bare=${4:-} log=$TMP/$1.log pid
    # Ready = the health check saw the upstream (/readyz, not in --bare), and a request goes through.
    if [[ -n $bare ]]; then gateway_launch "$name" "" "$bare"; else gateway_launch "$name" "$admin"; fi
    pid=$GW_PID
    if ! wait_ready "$name" "$pid" "http://127.0.0.1:$port/" ok "$log" "$(auth_header "$name")"; then
        if is_jwt "$name" && alive "$pid"; then
            echo "$PROG: $name: a request with its token answers $(curl -sS --max-time 2 -o /dev/null \
                -w '%{http_code}' -H "$(auth_header "$name")" "http://127.0.0.1:$port/" 2>&1)" >&2
        fi
        return 1
    fi
    if [[ -n $bare ]]; then
        echo "== $name ($bare): pid $pid on 127.0.0.1:$port"
    else
        echo "== $name: pid $pid on 127.0.0.1:$port (admin 127.0.0.1:$admin)"
    fi
}

metrics_of() { # gateway-name: its /metrics text (empty on failure)
    metrics_at "${ADMIN_PORT[$1]}" 2>/dev/null || true
}

# Configs first, so a bad binary or template fails before anything is started.
if want gateway; then gateway_conf gateway "$P_GW" "$P_GW_ADMIN"; fi
# The limited gateways: one policy so high that it never rejects, keyed by client
# IP (wrk's connections all come from 127.0.0.1: one hot key).
HIGH_POLICY=(POLICY=high RATE=100000000 PER=1s BURST=100000000 KEY=client_ip INSTANCES=1)
if want gateway-limited; then
    gateway_conf gateway-limited "$P_GWL" "$P_GWL_ADMIN" +LIMITED "${HIGH_POLICY[@]}"
fi
if want gateway-limited-redis; then
    gateway_conf gateway-limited-redis "$P_GWLR" "$P_GWLR_ADMIN" +LIMITED +REDIS "${HIGH_POLICY[@]}"
fi
# The JWT gateways: `gateway` with `auth: required` on its route and one issuer
# whose only key is the HS256 secret (kid "hs"), or the RSA test public key (kid "rs").
JWT_CONF=(JWT_ISSUER="$JWT_ISSUER" JWT_AUDIENCE="$JWT_AUDIENCE")
if want gateway-jwt-hs; then
    gateway_conf gateway-jwt-hs "$P_JWTHS" "$P_JWTHS_ADMIN" +JWT +JWT_HS "${JWT_CONF[@]}" JWT_SECRET="$JWT_SECRET"
fi
if want gateway-jwt-rs; then
    gateway_conf gateway-jwt-rs "$P_JWTRS" "$P_JWTRS_ADMIN" +JWT +JWT_RS "${JWT_CONF[@]}" JWT_PUBLIC_KEY_FILE="$JWT_PUBLIC_KEY"
fi
if want gateway-bare; then gateway_conf gateway-bare "$P_BARE" "$P_BARE_ADMIN"; fi

run_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
if want nginx; then
    run_nginx nginx-proxy "$P_NGINX" "$SCRIPT_DIR/nginx-proxy.conf.tmpl" UPSTREAM_PORT="$P_UPSTREAM"
fi
if want nginx-limited; then
    run_nginx nginx-limited "$P_NGINX_LIM" "$SCRIPT_DIR/nginx-proxy.conf.tmpl" UPSTREAM_PORT="$P_UPSTREAM" +LIMITED
    grep -q 'limit_req zone=' "$TMP/nginx-limited.conf" || die "nginx-limited: no limit_req in $TMP/nginx-limited.conf"
fi
if want gateway-limited-redis; then
    start_redis redis "$P_REDIS"
fi
for t in "${FULL_GATEWAYS[@]}"; do
    start_gateway "$t" "${PORT[$t]}" "${ADMIN_PORT[$t]}"
done
if want gateway-bare; then
    start_gateway gateway-bare "$P_BARE" "$P_BARE_ADMIN" --bare
fi

# A refused request to a JWT gateway: must be a 401 whose WWW-Authenticate names ERROR.
check_refused() { # name what error [curl args...]
    local name=$1 what=$2 error=$3 hdrs=$TMP/check-$1-${2// /-}.headers code challenge
    shift 3
    code=$(curl -sS --max-time 5 -o /dev/null -D "$hdrs" -w '%{http_code}' "$@" \
        "http://127.0.0.1:${PORT[$name]}/loadtest-check") || die "$name check ($what) request failed"
    [[ $code == 401 ]] || die "$name check: a request with $what returned $code, expected 401 (headers in $hdrs)"
    challenge=$(awk 'tolower($1) == "www-authenticate:" { $1 = ""; print substr($0, 2) }' "$hdrs" | tr -d '\r')
    [[ $challenge == *"error=\"$error\""* ]] \
        || die "$name check: a request with $what got WWW-Authenticate '$challenge', expected error=\"$error\""
}

# Each full gateway must really proxy and add a request id; the limited ones must
# also have gone through the limiter (RateLimit headers, an allowed decision),
# and the Redis one must have had its lease from Redis (no fallback decision);
# the JWT ones must accept their token and refuse a request without it (and one
# whose signature was tampered with) with a 401.
check_gateway() { # name
    local name=$1 hdrs=$TMP/check-$1.headers body rid rl metrics allowed fallback trips auth=() bad sig
    [[ -z ${TOKEN[$name]:-} ]] || auth=(-H "$(auth_header "$name")")
    body=$(curl -sS --max-time 5 -D "$hdrs" "${auth[@]}" "http://127.0.0.1:${PORT[$name]}/loadtest-check") \
        || die "$name check request failed"
    [[ $body == ok ]] || die "$name check: expected body 'ok', got '$body' (headers in $hdrs)"
    rid=$(awk 'tolower($1) == "x-request-id:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rid ]] || die "$name check: no x-request-id response header (headers in $hdrs)"
    if [[ $name == gateway ]]; then
        echo "== $name check: body 'ok', x-request-id: $rid"
        return 0
    fi
    if is_jwt "$name"; then
        [[ -n ${TOKEN[$name]:-} ]] || die "$name check: no token"
        check_refused "$name" "no token" invalid_request
        # The same token with the first signature character changed (6 whole bits).
        sig=${TOKEN[$name]##*.}
        if [[ ${sig:0:1} == A ]]; then bad=B; else bad=A; fi
        bad=${TOKEN[$name]%.*}.$bad${sig:1}
        check_refused "$name" "a bad signature" invalid_token -H "Authorization: Bearer $bad"
        echo "== $name check: with the token body 'ok' (x-request-id: $rid); without it 401 invalid_request; with a bad signature 401 invalid_token"
        return 0
    fi
    rl=$(awk 'tolower($1) == "ratelimit:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rl ]] || die "$name check: no RateLimit response header: is the limiter on? (headers in $hdrs)"
    metrics=$(metrics_of "$name")
    allowed=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="allowed"')
    fallback=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="fallback"')
    trips=$(metric_sum "$metrics" gateway_ratelimit_redis_round_trips_total)
    [[ $allowed != NA ]] && (( allowed > 0 )) || die "$name check: no allowed rate-limit decision in /metrics"
    if [[ $name == gateway-limited-redis ]]; then
        (( fallback == 0 )) || die "$name check: $fallback fallback decision(s): Redis not used (see $TMP/$name.log)"
        (( trips > 0 )) || die "$name check: no Redis round trip in /metrics"
        echo "== $name check: body 'ok', x-request-id: $rid, RateLimit: $rl, Redis round trips $trips, EVALSHA calls $(redis_evalsha_calls)"
    else
        echo "== $name check: body 'ok', x-request-id: $rid, RateLimit: $rl"
    fi
}
for t in "${FULL_GATEWAYS[@]}"; do check_gateway "$t"; done

# The JWT gateways' request counts after the checks: every request from here on must
# be a 200 (compared at the end, from /metrics).
declare -A BASE_TOTAL=() BASE_200=() BASE_0=()
for t in "${FULL_GATEWAYS[@]}"; do
    is_jwt "$t" || continue
    metrics=$(metrics_of "$t")
    BASE_TOTAL[$t]=$(metric_sum "$metrics" gateway_requests_total)
    BASE_200[$t]=$(metric_sum "$metrics" gateway_requests_total 'status="200"')
    BASE_0[$t]=$(metric_sum "$metrics" gateway_requests_total 'status="0"')
done

declare -A URL=()
for t in "${TARGET_LIST[@]}"; do URL[$t]="http://127.0.0.1:${PORT[$t]}/"; done

# ---------------------------------------------------------------- measurement
# One wrk run on TARGET (the JWT targets: with their one reused token); its exit status.
run_wrk() { # seconds target outfile
    local hdr=()
    [[ -z ${TOKEN[$2]:-} ]] || hdr=(-H "$(auth_header "$2")")
    wrk_bg "$1" "$3" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "${hdr[@]}" "${URL[$2]}"
    wait_bg "$WRK_PID"
}

RAW=$TMP/raw
mkdir -p "$RAW"
RUNS=$TMP/runs.tsv
printf 'round\ttarget\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\twrk_rc\n' >"$RUNS"

if (( WARMUP > 0 )); then
    echo "== warm-up: ${WARMUP}s per target (not recorded)"
    for t in "${TARGET_LIST[@]}"; do
        run_wrk "$WARMUP" "$t" "$RAW/warmup-$t.txt" || echo "   warm-up of $t: wrk exited $?" >&2
    done
fi

echo "== $ROUNDS round(s) x ${#TARGET_LIST[@]} target(s) x ${DURATION}s (raw outputs in $RAW)"
for (( r = 1; r <= ROUNDS; r++ )); do
    for t in "${TARGET_LIST[@]}"; do
        out=$RAW/round$r-$t.txt
        rc=0
        run_wrk "$DURATION" "$t" "$out" || rc=$?
        read -r rps p50 p99 non2xx sockerr reqs < <(parse_wrk "$out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$rps" "$p50" "$p99" "$non2xx" "$sockerr" "$reqs" "$rc" >>"$RUNS"
        printf '   round %d  %-21s %10s req/s  p50 %8s ms  p99 %8s ms%s\n' "$r" "$t" "$rps" "$p50" "$p99" \
            "$( (( rc != 0 )) && echo "  (wrk exit $rc)" || true)$( (( non2xx + sockerr > 0 )) && echo "  non-2xx $non2xx, socket errors $sockerr" || true)"
    done
done

# ---------------------------------------------------------------- summary
median() { # column-number target  (over runs.tsv, NA skipped)
    awk -F'\t' -v c="$1" -v t="$2" 'NR > 1 && $2 == t && $c != "NA" { print $c }' "$RUNS" | sort -g |
        awk '{ a[NR] = $1 } END {
            if (NR == 0) { print "NA"; exit }
            if (NR % 2) printf "%.3f\n", a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
sum_col() { awk -F'\t' -v c="$1" -v t="$2" 'NR > 1 && $2 == t { s += $c } END { print s + 0 }' "$RUNS"; }

declare -A MED_RPS MED_P50 MED_P99
for t in "${TARGET_LIST[@]}"; do
    MED_RPS[$t]=$(median 3 "$t")
    MED_P50[$t]=$(median 4 "$t")
    MED_P99[$t]=$(median 5 "$t")
done
ratio() { # target base: median req/s of target / base's, "-" when either is missing
    local base=${MED_RPS[$2]:-NA} v=${MED_RPS[$1]:-NA}
    if [[ $base == NA || $v == NA ]]; then echo "-"; else awk -v a="$v" -v b="$base" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }'; fi
}
ratio_gw() { # vs the full gateway: only for the gateways (the limiter's or auth's cost, or --bare's saving)
    case $1 in gateway*) ratio "$1" gateway ;; *) echo "-" ;; esac
}

SUMMARY=$TMP/summary.tsv
printf 'target\tmedian_rps\tmedian_p50_ms\tmedian_p99_ms\trps_vs_nginx\trps_vs_gateway\tnon2xx_total\tsocket_errors_total\n' >"$SUMMARY"
for t in "${TARGET_LIST[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${MED_RPS[$t]}" "${MED_P50[$t]}" "${MED_P99[$t]}" \
        "$(ratio "$t" nginx)" "$(ratio_gw "$t")" "$(sum_col 6 "$t")" "$(sum_col 7 "$t")" >>"$SUMMARY"
done

echo
echo "== medians over $ROUNDS round(s), ${DURATION}s each, $CONNECTIONS connections"
awk -F'\t' '
    NR == 1 { printf "%-22s %10s %9s %9s %9s %10s %8s %8s\n", "target", "req/s", "p50 ms", "p99 ms", "vs nginx", "vs gateway", "non-2xx", "sock-err"; next }
    {
        rps = ($2 == "NA" ? "NA" : sprintf("%.0f", $2))
        p50 = ($3 == "NA" ? "NA" : sprintf("%.3f", $3))
        p99 = ($4 == "NA" ? "NA" : sprintf("%.3f", $4))
        printf "%-22s %10s %9s %9s %9s %10s %8s %8s\n", $1, rps, p50, p99, $5, $6, $7, $8
    }' "$SUMMARY"
COST=()
if want nginx-limited && want nginx; then COST+=("nginx-limited/nginx $(ratio nginx-limited nginx)"); fi
for t in gateway-limited gateway-limited-redis; do
    if want "$t" && want gateway; then COST+=("$t/gateway $(ratio "$t" gateway)"); fi
done
if (( ${#COST[@]} > 0 )); then
    echo "== limiter cost, req/s with the limiter on / off (1.00 = free): $(IFS=,; echo "${COST[*]}" | sed 's/,/, /g')"
fi
COST=()
for t in gateway-jwt-hs gateway-jwt-rs; do
    if want "$t" && want gateway; then COST+=("$t/gateway $(ratio "$t" gateway)"); fi
done
if (( ${#COST[@]} > 0 )); then
    echo "== auth cost: $(IFS=,; echo "${COST[*]}" | sed 's/,/, /g') (req/s with JWT auth on / off, 1.00 = free; one reused token: verified-token cache hits)"
fi
echo

# A server that died during the run invalidates its numbers (and is a bug).
find_died

GW_NOTES=() # one line of key=value per gateway, for the results file
for g in "${FULL_GATEWAYS[@]}"; do
    notes=()
    metrics=$(metrics_of "$g")
    [[ -n $metrics ]] || echo "== WARNING: could not read $g's /metrics" >&2
    gw_5xx=$(metric_sum "$metrics" gateway_requests_total 'status="5[0-9][0-9]"')
    gw_429=$(metric_sum "$metrics" gateway_requests_total 'status="429"')
    gw_total=$(metric_sum "$metrics" gateway_requests_total)
    gw_dropped=$(metric_sum "$metrics" gateway_access_log_dropped_total)
    notes+=("${g}_5xx=$gw_5xx" "${g}_429=$gw_429" "${g}_requests_total=$gw_total" "${g}_access_log_dropped=$gw_dropped")
    echo "== $g /metrics: $gw_5xx responses with status 5xx, $gw_429 with 429, $gw_total requests in total, access-log lines dropped: $gw_dropped"
    if is_jwt "$g"; then
        # Every request after the checks (warm-up and rounds) must have been answered
        # 200. Status 0 = not answered: the client left first, which wrk does with the
        # requests in flight when it stops (at most one per connection per wrk run).
        d_total=NA d_200=NA d_0=NA other=NA
        if [[ $gw_total != NA && ${BASE_TOTAL[$g]} != NA ]]; then
            d_total=$(( gw_total - ${BASE_TOTAL[$g]} ))
            d_200=$(( $(metric_sum "$metrics" gateway_requests_total 'status="200"') - ${BASE_200[$g]} ))
            d_0=$(( $(metric_sum "$metrics" gateway_requests_total 'status="0"') - ${BASE_0[$g]} ))
            other=$(( d_total - d_200 - d_0 ))
        fi
        notes+=("${g}_run_requests=$d_total" "${g}_run_200=$d_200" "${g}_run_unanswered=$d_0" "${g}_run_other_status=$other")
        echo "   during the load: $d_total requests: $d_200 answered 200, $other answered otherwise, $d_0 unanswered (in flight when wrk stopped)"
        wrk_runs=$(( ROUNDS + (WARMUP > 0 ? 1 : 0) ))
        if [[ $d_total == NA ]]; then
            echo "== WARNING: $g: no request counts from /metrics, cannot tell whether every response was a 200" >&2
        elif [[ $other != 0 || $(sum_col 6 "$g") != 0 ]] || (( d_0 > CONNECTIONS * wrk_runs )); then
            echo "== WARNING: $g: not every request during the load was a 200 (or more unanswered than wrk can leave in flight, $(( CONNECTIONS * wrk_runs ))); by status:" >&2
            grep -E '^gateway_requests_total\{' <<<"$metrics" | sed 's/^/   /' >&2 || true
        fi
    fi
    if is_limited "$g"; then
        allowed=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="allowed"')
        limited=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="limited"')
        fallback=$(metric_sum "$metrics" gateway_ratelimit_decisions_total 'outcome="fallback"')
        trips=$(metric_sum "$metrics" gateway_ratelimit_redis_round_trips_total)
        rerrs=$(metric_sum "$metrics" gateway_ratelimit_redis_errors_total)
        notes+=("${g}_ratelimit_allowed=$allowed" "${g}_ratelimit_limited=$limited" "${g}_ratelimit_fallback=$fallback")
        line="   rate-limit decisions: allowed $allowed, limited $limited, fallback $fallback"
        if [[ $g == gateway-limited-redis ]]; then
            evalsha=$(redis_evalsha_calls)
            notes+=("${g}_redis_round_trips=$trips" "${g}_redis_errors=$rerrs" "redis_evalsha_calls=$evalsha")
            line+="; Redis round trips $trips ($(awk -v a="$trips" -v b="$gw_total" 'BEGIN { printf (b > 0 ? "%.5f" : "NA"), a / b }') per request), EVALSHA calls $evalsha, Redis errors $rerrs"
        fi
        echo "$line"
        if [[ $limited != 0 || $fallback != 0 ]]; then
            echo "== WARNING: $g limited $limited and fell back $fallback time(s); the policy should never reject" >&2
        fi
    fi
    if [[ $ACCESS_LOG == on && -f $TMP/$g-access.log ]]; then
        lines=$(wc -l <"$TMP/$g-access.log")
        echo "   access log: $lines lines, $(du -h "$TMP/$g-access.log" | cut -f1)"
        notes+=("${g}_access_log_lines=$lines")
    fi
    GW_NOTES+=("${notes[*]}")
done
if want nginx-limited; then
    # limit_req logs each rejection at "error" level; error_log is at "warn".
    n=$(grep -c 'limiting requests' "$TMP/nginx-limited-error.log" 2>/dev/null || true)
    echo "== nginx-limited: ${n:-0} request(s) rejected by limit_req (from its error log)"
    GW_NOTES+=("nginx_limited_rejected=${n:-0}")
fi
for t in "${TARGET_LIST[@]}"; do
    echo "== $t: wrk non-2xx/3xx responses $(sum_col 6 "$t"), socket errors $(sum_col 7 "$t")"
done
for name in "${FULL_GATEWAYS[@]}" gateway-bare; do
    want "$name" || continue
    log_summary "$name" "$TMP/$name.log" 4
done
show_load end
show_top

results_begin ""
{
    results_header "gateway load test" \
        "duration_s=$DURATION rounds=$ROUNDS connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS access_log=$ACCESS_LOG warmup_s=$WARMUP" \
        "cpus=$(nproc) nginx=$(nginx_version) wrk=$(wrk_version)"
    (( ${#GW_NOTES[@]} == 0 )) || printf '%s\n' "${GW_NOTES[@]}"
    (( ${#DIED[@]} == 0 )) || echo "died_during_run=${DIED[*]}"
    echo "raw_dir=$RAW"
    echo "## summary"
    cat "$SUMMARY"
    echo "## runs"
    cat "$RUNS"
} >"$RESULT"
echo "== summary written to $RESULT"
echo "== raw wrk outputs: $RAW"
