#!/usr/bin/env bash
# Load test: the gateway (full, with the rate limiter on, with JWT auth, and --bare)
# against nginx as a reverse proxy (plain and with limit_req), HAProxy and pingap
# (another proxy on Pingora), all in front of the same nginx upstream, on loopback.
# See loadtest/README.md.
#
# Per measured run (wrk's and oha's): req/s and latency, the CPU time per request of
# the process under test (utime + stime from /proc/PID/stat, all its threads; nginx's
# master and workers summed; HAProxy, run in the foreground, and pingap are one
# process each) and the connections it opened to the upstream (the upstream nginx's
# stub_status `accepts`, on a port of its own) per 1,000 requests.
#
# Knobs (environment):
#   DURATION=8        seconds per wrk (and oha) run
#   ROUNDS=3          interleaved rounds (each round runs every target once)
#   CONNECTIONS=64    wrk (and oha) connections
#   WRK_THREADS=2     wrk threads (and oha's --worker-threads, where it has that option)
#   LOAD_TOOLS="wrk oha"  the load generators, each target in each round: wrk, then oha
#                     with the same connections and duration; "wrk" for wrk only. Unset:
#                     both, installing oha (`cargo install oha --locked`) when it is missing
#                     unless CI is set or OHA_INSTALL=0, else wrk only with a note; set
#                     with oha: oha must be there or installable
#   OHA_INSTALL=1     0: never install oha
#   OHA=oha           the oha binary (default: on PATH, else $CARGO_HOME/bin/oha)
#   THREADS=2         gateway server.threads, HAProxy nbthread, pingap threads (nginx: 2
#                     workers)
#   TARGETS="upstream nginx haproxy pingap nginx-limited gateway gateway-limited
#            gateway-limited-redis gateway-jwt-hs gateway-jwt-rs gateway-full gateway-bare"
#                     gateway-full: every feature at once (JWT HS256 required, the
#                     Redis-leased limit, access log, metrics)
#                     subset/order (spaces or commas); also gateway-dashboard (the
#                     gateway with its dashboard polled once a second: A/B it with gateway).
#                     haproxy and pingap (no access log, like nginx; the gateway's is on,
#                     see ACCESS_LOG) need HAProxy and pingap: by default a target whose
#                     proxy is not installed is left out with a note; named in TARGETS it
#                     must be there
#   HAPROXY=haproxy   the HAProxy binary (default: on PATH, else /usr/sbin/haproxy)
#   PINGAP=pingap     the pingap binary (default: on PATH, else $CARGO_HOME/bin/pingap;
#                     `cargo install pingap --version 0.13.1 --locked`)
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
DEFAULT_TARGETS="upstream nginx haproxy pingap nginx-limited gateway gateway-limited gateway-limited-redis gateway-jwt-hs gateway-jwt-rs gateway-full gateway-bare"
# gateway-dashboard: the plain gateway while its live dashboard is open (/api/stats
# polled once a second, as the page does), to A/B against `gateway`; not run by default.
ALL_TARGETS="$DEFAULT_TARGETS gateway-dashboard"
TARGETS_GIVEN=${TARGETS:+1}
TARGETS=${TARGETS:-$DEFAULT_TARGETS}
ACCESS_LOG=${ACCESS_LOG:-on}
KEEP_ACCESS_LOG=${KEEP_ACCESS_LOG:-0}
WARMUP=${WARMUP:-1}
OPENSSL=${OPENSSL:-$(command -v openssl || echo /usr/bin/openssl)}
LOAD_TOOLS_GIVEN=${LOAD_TOOLS:+1}
LOAD_TOOLS=${LOAD_TOOLS:-wrk oha}
OHA_INSTALL=${OHA_INSTALL:-1}

require_positive DURATION ROUNDS CONNECTIONS WRK_THREADS THREADS
is_uint "$WARMUP" || die "WARMUP must be a whole number of seconds, got '$WARMUP'"
require_on_off ACCESS_LOG
[[ $OHA_INSTALL == [01] ]] || die "OHA_INSTALL must be 0 or 1, got '$OHA_INSTALL'"
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS

# The load generators: wrk always (the table, its ratios and the checks are wrk's),
# then oha when asked for.
parse_list LOAD_TOOLS TOOL_LIST tool "wrk oha"
[[ " ${TOOL_LIST[*]} " == *" wrk "* ]] || die "LOAD_TOOLS must include wrk, got '$LOAD_TOOLS'"
if [[ " ${TOOL_LIST[*]} " == *" oha "* ]]; then TOOL_LIST=(wrk oha); else TOOL_LIST=(wrk); fi
uses_oha() { (( ${#TOOL_LIST[@]} > 1 )); }
no_oha() { # why: carry on with wrk only (by default), or die (LOAD_TOOLS asked for oha)
    [[ -z $LOAD_TOOLS_GIVEN ]] || die "LOAD_TOOLS='$LOAD_TOOLS' but $1"
    echo "== NOTE: $1: wrk only (LOAD_TOOLS=wrk says so without this note)" >&2
    TOOL_LIST=(wrk)
}

parse_list TARGETS TARGET_LIST target "$ALL_TARGETS"
want() { [[ " ${TARGET_LIST[*]} " == *" $1 "* ]]; }
# haproxy and pingap are optional by default: without their proxy they are left out.
no_proxy() { # target why how-to-install: leave TARGET out (by default), or die (TARGETS named it)
    [[ -z $TARGETS_GIVEN ]] || die "TARGETS='$TARGETS' has $1 but $2: $3"
    echo "== NOTE: $2: $1 left out (to run it: $3; TARGETS without $1 says so without this note)" >&2
    local keep=() t
    for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] || keep+=("$t"); done
    TARGET_LIST=("${keep[@]}")
}
if want haproxy && ! command -v "$HAPROXY" >/dev/null; then
    no_proxy haproxy "HAProxy is not installed ($HAPROXY)" "apt-get install haproxy, or HAPROXY=/path/to/haproxy"
fi
if want pingap && ! command -v "$PINGAP" >/dev/null; then
    no_proxy pingap "pingap is not installed ($PINGAP)" \
        "cargo install pingap --version 0.13.1 --locked (needs protoc: apt-get install protobuf-compiler), or PINGAP=/path/to/pingap"
fi
# Roles follow from the names (report.py's run_role has the same rules): the full
# gateways (/metrics, request ids, access log) are every gateway but --bare.
is_full() { [[ $1 == gateway* && $1 != gateway-bare ]]; }
is_jwt() { [[ $1 == gateway-jwt-* || $1 == gateway-full ]]; }
is_limited() { [[ $1 == gateway-limited* || $1 == gateway-full ]]; }
is_redis() { [[ $1 == gateway-*redis* || $1 == gateway-full ]]; }
any_target() { local t; for t in "${TARGET_LIST[@]}"; do "$1" "$t" && return 0; done; return 1; } # role
FULL_GATEWAYS=()
for t in "${TARGET_LIST[@]}"; do if is_full "$t"; then FULL_GATEWAYS+=("$t"); fi; done

tools=(wrk curl python3 timeout "$NGINX")
if any_target is_redis; then tools+=("$REDIS_SERVER" "$REDIS_CLI"); fi
if want gateway-jwt-rs; then tools+=("$OPENSSL"); fi
require_tools "${tools[@]}"
# oha last: installing it takes minutes.
if uses_oha && ! command -v "$OHA" >/dev/null; then
    if [[ -n ${CI:-} ]]; then
        no_oha "oha is not installed ($OHA) and CI is set (no install in CI)"
    elif [[ $OHA_INSTALL == 0 ]]; then
        no_oha "oha is not installed ($OHA) and OHA_INSTALL=0"
    elif ! command -v cargo >/dev/null; then
        no_oha "oha is not installed ($OHA) and there is no cargo to install it"
    else
        echo "== oha not found ($OHA): cargo install oha --locked (minutes; OHA_INSTALL=0 or LOAD_TOOLS=wrk skips it)"
        if cargo install oha --locked >&2; then
            OHA=$(command -v oha || echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha")
            command -v "$OHA" >/dev/null || no_oha "oha was installed but is not at $OHA"
        else
            no_oha "cargo install oha --locked failed"
        fi
    fi
fi
if uses_oha; then oha_flags "$WRK_THREADS"; fi # -> OHA_ARGS
export LOADTEST_OHA=$OHA # (report.py asks it its version)

# ---------------------------------------------------------------- processes & cleanup
on_cleanup() { # (called by lib.sh's cleanup, after every process has stopped)
    if [[ $KEEP_ACCESS_LOG != 1 ]]; then
        rm -f "$TMP"/gateway*-access.log
    fi
}
setup_tmp gateway-loadtest "raw wrk and oha outputs, configs, logs"

# ---------------------------------------------------------------- set-up
echo "== gateway load test: DURATION=${DURATION}s ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG TARGETS='${TARGET_LIST[*]}' LOAD_TOOLS='${TOOL_LIST[*]}'"
if uses_oha; then echo "== oha: $OHA ${OHA_ARGS[*]} -c $CONNECTIONS -z ${DURATION}s after each wrk run"; fi
echo "== temp dir: $TMP"
TOOLS_CSV=$(IFS=,; echo "${TOOL_LIST[*]}")
VERSIONS=nginx # (of the proxies that run, then of the load tools)
for t in haproxy pingap; do if want "$t"; then VERSIONS+=",$t"; fi; done
CLK_TCK=$(getconf CLK_TCK) # the unit of /proc/PID/stat's utime and stime
is_uint "$CLK_TCK" && (( CLK_TCK > 0 )) || die "getconf CLK_TCK printed '$CLK_TCK'"
report begin "" "gateway load test" "duration_s=$DURATION rounds=$ROUNDS connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS access_log=$ACCESS_LOG warmup_s=$WARMUP load_tools=$TOOLS_CSV${OHA_THREADS:+ oha_threads=$OHA_THREADS} clk_tck=$CLK_TCK" --versions "$VERSIONS,$TOOLS_CSV"

if [[ ${TARGET_LIST[*]} == *gateway* ]]; then prepare_gateway; fi

# Free loopback ports: the upstream, Redis, the upstream's stub_status, and a port and
# an admin port per target.
free_ports $(( 3 + 2 * ${#TARGET_LIST[@]} ))
P_UPSTREAM=${PORTS[0]} P_REDIS=${PORTS[1]} P_STATUS=${PORTS[2]}
declare -A PORT=() ADMIN_PORT=()
for i in "${!TARGET_LIST[@]}"; do
    PORT[${TARGET_LIST[i]}]=${PORTS[3 + 2 * i]}
    ADMIN_PORT[${TARGET_LIST[i]}]=${PORTS[4 + 2 * i]}
done
PORT[upstream]=$P_UPSTREAM

# ---------------------------------------------------------------- JWT targets
# One token per JWT target, minted here and reused by every request (so after the
# first request the gateway answers from its cache of verified tokens).
JWT_ISSUER=https://issuer.test
JWT_AUDIENCE=api
JWT_SECRET=loadtest-hs256-secret-not-for-production-0123456789 # >= 32 bytes (RFC 7518)
JWT_PRIVATE_KEY=$ROOT/tests/fixtures/rsa-private.pem
JWT_PUBLIC_KEY=$ROOT/tests/fixtures/rsa-public.pem
declare -A TOKEN=() # target -> its bearer token (the JWT targets only)
if want gateway-jwt-hs || want gateway-jwt-rs || want gateway-full; then
    # exp = now + 1 h, or later when the run could outlast that (a token expiring
    # mid-run would turn every later request into a 401).
    jwt_life=$(( (WARMUP + ROUNDS * DURATION * ${#TOOL_LIST[@]}) * ${#TARGET_LIST[@]} + 600 ))
    (( jwt_life >= 3600 )) || jwt_life=3600
    jwt_exp=$(( $(date +%s) + jwt_life ))
    for t in gateway-jwt-hs gateway-full; do
        want "$t" || continue
        TOKEN[$t]=$(JWT_SECRET=$JWT_SECRET report jwt HS256 hs "$jwt_exp" "$JWT_ISSUER" "$JWT_AUDIENCE") \
            || die "could not sign a HS256 token"
    done
    if want gateway-jwt-rs; then
        [[ -r $JWT_PRIVATE_KEY && -r $JWT_PUBLIC_KEY ]] || die "RSA test keys not found: $JWT_PRIVATE_KEY, $JWT_PUBLIC_KEY"
        TOKEN[gateway-jwt-rs]=$(OPENSSL=$OPENSSL report jwt RS256 rs "$jwt_exp" "$JWT_ISSUER" "$JWT_AUDIENCE" \
            --key "$JWT_PRIVATE_KEY") || die "could not sign a RS256 token"
    fi
    echo "== JWT tokens: iss $JWT_ISSUER, aud $JWT_AUDIENCE, sub loadtest, exp $jwt_exp (in ${jwt_life}s)"
fi
auth_header() { # target: its Authorization header line, or nothing
    if [[ -n ${TOKEN[$1]:-} ]]; then echo "Authorization: Bearer ${TOKEN[$1]}"; fi
}

# Each target's config beyond the common values: the template's sections and its own
# values (nginx-proxy.conf.tmpl for nginx*, gateway.yaml.tmpl for gateway*; haproxy
# and pingap have theirs, haproxy.cfg.tmpl and pingap.toml.tmpl), one line a target.
# The limited gateways: one policy so high that it never rejects, keyed by
# client IP (wrk's connections all come from 127.0.0.1: one hot key). The JWT
# gateways: `auth: required` on the route and one issuer whose only key is the HS256
# secret (kid "hs") or the RSA test public key (kid "rs").
HIGH_POLICY=(POLICY=high RATE=100000000 PER=1s BURST=100000000 KEY=client_ip INSTANCES=1)
JWT_CONF=(JWT_ISSUER="$JWT_ISSUER" JWT_AUDIENCE="$JWT_AUDIENCE")
target_conf() { # target: sets CONF
    case $1 in
        nginx-limited) CONF=(+LIMITED) ;;
        gateway-limited) CONF=(+LIMITED "${HIGH_POLICY[@]}") ;;
        gateway-limited-redis) CONF=(+LIMITED +REDIS "${HIGH_POLICY[@]}") ;;
        gateway-jwt-hs) CONF=(+JWT +JWT_HS "${JWT_CONF[@]}" JWT_SECRET="$JWT_SECRET") ;;
        gateway-jwt-rs) CONF=(+JWT +JWT_RS "${JWT_CONF[@]}" JWT_PUBLIC_KEY_FILE="$JWT_PUBLIC_KEY") ;;
        gateway-full) CONF=(+JWT +JWT_HS "${JWT_CONF[@]}" JWT_SECRET="$JWT_SECRET" +LIMITED +REDIS "${HIGH_POLICY[@]}") ;;
        *) CONF=() ;;
    esac
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

# HAProxy: one process in the foreground (-db: no daemon, no master-worker) with
# THREADS threads; its alerts and warnings (it has no access log) in $TMP/NAME.log.
haproxy_conf() { # name port: renders $TMP/name.cfg and checks it (haproxy -c)
    local conf=$TMP/$1.cfg out
    render "$SCRIPT_DIR/haproxy.cfg.tmpl" "$conf" DIR="$TMP" NAME="$1" PORT="$2" THREADS="$THREADS" \
        POOL_LOW_CONN=$(( 2 * THREADS )) UPSTREAM_PORT="$P_UPSTREAM"
    out=$("$HAPROXY" -c -q -f "$conf" 2>&1) || die "$1: '$HAPROXY -c' refused $conf: $out"
}
start_haproxy() { # name port: PROXY_PID is its pid
    local name=$1 port=$2 log=$TMP/$1.log
    "$HAPROXY" -db -f "$TMP/$name.cfg" >"$log" 2>&1 &
    PROXY_PID=$!
    started "$name" "$PROXY_PID"
    wait_ready "$name" "$PROXY_PID" "http://127.0.0.1:$port/" ok "$log" || return 1
    echo "== $name: HAProxy pid $PROXY_PID ($THREADS threads) on 127.0.0.1:$port"
}

# pingap: one process in the foreground with THREADS worker threads, its log (stderr)
# in $TMP/NAME.log. The PINGAP_* variables that would make it daemonize, upgrade, serve
# an admin page, restart or log elsewhere are removed from its environment (`env`
# execs it: same pid). It exits 0 even when it refuses a config, so `-t` is judged by
# what it prints.
PINGAP_RUN=(env -u PINGAP_DAEMON -u PINGAP_UPGRADE -u PINGAP_ADMIN_ADDR -u PINGAP_CP
    -u PINGAP_AUTORESTART -u PINGAP_AUTORELOAD -u PINGAP_LOG "$PINGAP")
pingap_conf() { # name port: renders $TMP/name.toml and checks it (pingap -t)
    local conf=$TMP/$1.toml out
    render "$SCRIPT_DIR/pingap.toml.tmpl" "$conf" DIR="$TMP" NAME="$1" PORT="$2" THREADS="$THREADS" \
        UPSTREAM_PORT="$P_UPSTREAM"
    out=$("${PINGAP_RUN[@]}" -t -c "$conf" 2>&1) || true
    [[ $out == *"Validate config success"* ]] || die "$1: '$PINGAP -t -c $conf' did not validate it: $out"
}
start_pingap() { # name port: PROXY_PID is its pid
    local name=$1 port=$2 log=$TMP/$1.log
    "${PINGAP_RUN[@]}" -c "$TMP/$name.toml" >"$log" 2>&1 &
    PROXY_PID=$!
    started "$name" "$PROXY_PID"
    wait_ready "$name" "$PROXY_PID" "http://127.0.0.1:$port/" ok "$log" || return 1
    echo "== $name: pingap pid $PROXY_PID ($THREADS threads) on 127.0.0.1:$port"
}

metrics_of() { # gateway-name: its /metrics text (empty on failure)
    metrics_at "${ADMIN_PORT[$1]}" 2>/dev/null || true
}

# Configs first, so a bad binary or template fails before anything is started.
for t in "${TARGET_LIST[@]}"; do
    target_conf "$t"
    case $t in
        gateway*) gateway_conf "$t" "${PORT[$t]}" "${ADMIN_PORT[$t]}" "${CONF[@]}" ;;
        haproxy) haproxy_conf "$t" "${PORT[$t]}" ;;
        pingap) pingap_conf "$t" "${PORT[$t]}" ;;
    esac
done

# PID: each target's process whose CPU time is measured (nginx: its master; proc_stats
# adds the workers; HAProxy and pingap: their one process).
declare -A PID=()
run_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl" +STATUS STATUS_PORT="$P_STATUS"
PID[upstream]=$NGINX_PID
for t in "${TARGET_LIST[@]}"; do
    [[ $t == nginx* ]] || continue
    target_conf "$t"
    run_nginx "$t" "${PORT[$t]}" "$SCRIPT_DIR/nginx-proxy.conf.tmpl" UPSTREAM_PORT="$P_UPSTREAM" "${CONF[@]}"
    PID[$t]=$NGINX_PID
done
if want haproxy; then
    start_haproxy haproxy "${PORT[haproxy]}"
    PID[haproxy]=$PROXY_PID
fi
if want pingap; then
    start_pingap pingap "${PORT[pingap]}"
    PID[pingap]=$PROXY_PID
fi
if want nginx-limited; then
    grep -q 'limit_req zone=' "$TMP/nginx-limited.conf" || die "nginx-limited: no limit_req in $TMP/nginx-limited.conf"
fi
if any_target is_redis; then start_redis redis "$P_REDIS"; fi
for t in "${FULL_GATEWAYS[@]}"; do
    start_gateway "$t" "${PORT[$t]}" "${ADMIN_PORT[$t]}"
    PID[$t]=$GW_PID
done
if want gateway-bare; then
    start_gateway gateway-bare "${PORT[gateway-bare]}" "${ADMIN_PORT[gateway-bare]}" --bare
    PID[gateway-bare]=$GW_PID
fi

# What a run costs, read before and after it: the upstream's stub_status (the
# connections accepted so far; the load tools never use its port) and the /proc/PID/stat
# lines of the target's processes. Both must be readable now.
read_status() { # outfile
    curl -sS --max-time 2 "http://127.0.0.1:$P_STATUS/" >"$1" 2>/dev/null || true
}
read_status "$TMP/upstream-status-check.txt"
grep -q '^server accepts handled requests' "$TMP/upstream-status-check.txt" \
    || die "the upstream's stub_status on 127.0.0.1:$P_STATUS did not answer (see $TMP/upstream-status-check.txt)"
for t in "${TARGET_LIST[@]}"; do
    [[ -n ${PID[$t]:-} && -n $(proc_stats "${PID[$t]}") ]] || die "$t: no /proc/PID/stat for its process (pid '${PID[$t]:-}')"
done
pids=""
for t in "${TARGET_LIST[@]}"; do pids+=" $t=${PID[$t]}"; done
echo "== cost of each run: CPU time from /proc/PID/stat (CLK_TCK $CLK_TCK) of$pids (nginx: with its workers);"
echo "   connections opened to the upstream from its stub_status (127.0.0.1:$P_STATUS)"
cost_before() { # target prefix: the upstream's counters, then the CPU times (the read's own work outside)
    read_status "$2-status-before.txt"
    proc_stats "${PID[$1]}" >"$2-cpu-before.txt"
}
cost_after() { # target prefix
    proc_stats "${PID[$1]}" >"$2-cpu-after.txt"
    read_status "$2-status-after.txt"
}
cost_args() { # prefix: report round's / oha-round's options
    COST_ARGS=(--cpu "$1-cpu-before.txt" "$1-cpu-after.txt" --upstream-status "$1-status-before.txt" "$1-status-after.txt")
}

# A refused request to a JWT gateway: must be a 401 whose WWW-Authenticate names ERROR.
check_refused() { # name what error [curl args...]
    local name=$1 what=$2 error=$3 hdrs=$TMP/check-$1-${2// /-}.headers code challenge
    shift 3
    code=$(curl -sS --max-time 5 -o /dev/null -D "$hdrs" -w '%{http_code}' "$@" \
        "http://127.0.0.1:${PORT[$name]}/loadtest-check") || die "$name check ($what) request failed"
    [[ $code == 401 ]] || die "$name check: a request with $what returned $code, expected 401 (headers in $hdrs)"
    challenge=$(report header "$hdrs" www-authenticate)
    [[ $challenge == *"error=\"$error\""* ]] \
        || die "$name check: a request with $what got WWW-Authenticate '$challenge', expected error=\"$error\""
}

# Each full gateway must really proxy and add a request id; the limited ones must
# also have gone through the limiter (RateLimit headers, an allowed decision),
# and the Redis one must have had its lease from Redis (no fallback decision);
# the JWT ones must accept their token and refuse a request without it (and one
# whose signature was tampered with) with a 401.
check_gateway() { # name
    local name=$1 hdrs=$TMP/check-$1.headers m=$TMP/$1-check.metrics body rid rl allowed fallback trips auth=() bad sig
    [[ -z ${TOKEN[$name]:-} ]] || auth=(-H "$(auth_header "$name")")
    body=$(curl -sS --max-time 5 -D "$hdrs" "${auth[@]}" "http://127.0.0.1:${PORT[$name]}/loadtest-check") \
        || die "$name check request failed"
    [[ $body == ok ]] || die "$name check: expected body 'ok', got '$body' (headers in $hdrs)"
    rid=$(report header "$hdrs" x-request-id)
    [[ -n $rid ]] || die "$name check: no x-request-id response header (headers in $hdrs)"
    if is_jwt "$name"; then
        [[ -n ${TOKEN[$name]:-} ]] || die "$name check: no token"
        check_refused "$name" "no token" invalid_request
        # The same token with the first signature character changed (6 whole bits).
        sig=${TOKEN[$name]##*.}
        if [[ ${sig:0:1} == A ]]; then bad=B; else bad=A; fi
        bad=${TOKEN[$name]%.*}.$bad${sig:1}
        check_refused "$name" "a bad signature" invalid_token -H "Authorization: Bearer $bad"
        echo "== $name check: with the token body 'ok' (x-request-id: $rid); without it 401 invalid_request; with a bad signature 401 invalid_token"
        is_limited "$name" || return 0
    elif ! is_limited "$name"; then
        echo "== $name check: body 'ok', x-request-id: $rid"
        return 0
    fi
    rl=$(report header "$hdrs" ratelimit)
    [[ -n $rl ]] || die "$name check: no RateLimit response header: is the limiter on? (headers in $hdrs)"
    metrics_of "$name" >"$m"
    allowed=$(report metric "$m" 'gateway_ratelimit_decisions_total{outcome="allowed"}')
    fallback=$(report metric "$m" 'gateway_ratelimit_decisions_total{outcome="fallback"}')
    trips=$(report metric "$m" gateway_ratelimit_redis_round_trips_total)
    [[ $allowed != NA ]] && (( allowed > 0 )) || die "$name check: no allowed rate-limit decision in /metrics"
    if is_redis "$name"; then
        (( fallback == 0 )) || die "$name check: $fallback fallback decision(s): Redis not used (see $TMP/$name.log)"
        (( trips > 0 )) || die "$name check: no Redis round trip in /metrics"
        echo "== $name check: body 'ok', x-request-id: $rid, RateLimit: $rl, Redis round trips $trips, EVALSHA calls $(redis_info | report evalsha -)"
    else
        echo "== $name check: body 'ok', x-request-id: $rid, RateLimit: $rl"
    fi
}
for t in "${FULL_GATEWAYS[@]}"; do check_gateway "$t"; done

# The JWT gateways' request counts after the checks: every request from here on must
# be a 200 (report.py compares them with the counts at the end).
for t in "${FULL_GATEWAYS[@]}"; do
    if is_jwt "$t"; then metrics_of "$t" >"$TMP/$t-base.metrics"; fi
done

declare -A URL=()
for t in "${TARGET_LIST[@]}"; do URL[$t]="http://127.0.0.1:${PORT[$t]}/"; done

# gateway-dashboard: what the open page asks of the admin listener, once a second, for as
# long as its target is measured. Each answer's status goes to TMP/dashboard-polls.txt.
POLLER=""
start_poller() { # target
    [[ $1 == gateway-dashboard ]] || return 0
    poll_each_second "http://127.0.0.1:${ADMIN_PORT[$1]}/api/stats" "$TMP/dashboard-polls.txt"
    POLLER=$POLL_PID
}
stop_poller() {
    [[ -n $POLLER ]] || return 0
    stop_poll "$POLLER"
    POLLER=""
}

# ---------------------------------------------------------------- measurement
# One wrk run on TARGET (the JWT targets: with their one reused token); its exit status.
run_wrk() { # seconds target outfile
    local hdr=()
    [[ -z ${TOKEN[$2]:-} ]] || hdr=(-H "$(auth_header "$2")")
    wrk_run "$1" "$3" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "${hdr[@]}" "${URL[$2]}"
}
# The same with oha (its JSON report in OUTFILE); its exit status.
run_oha() { # seconds target outfile
    local hdr=()
    [[ -z ${TOKEN[$2]:-} ]] || hdr=(-H "$(auth_header "$2")")
    oha_run "$1" "$3" -c "$CONNECTIONS" -z "$1"s "${hdr[@]}" "${URL[$2]}"
}

RAW=$TMP/raw
mkdir -p "$RAW"
if (( WARMUP > 0 )); then
    echo "== warm-up: ${WARMUP}s per target (not recorded)"
    for t in "${TARGET_LIST[@]}"; do
        run_wrk "$WARMUP" "$t" "$RAW/warmup-$t.txt" || echo "   warm-up of $t: wrk exited $?" >&2
    done
fi

echo "== $ROUNDS round(s) x ${#TARGET_LIST[@]} target(s) x ${DURATION}s, with ${TOOL_LIST[*]} (raw outputs in $RAW)"
for (( r = 1; r <= ROUNDS; r++ )); do
    for t in "${TARGET_LIST[@]}"; do
        rc=0
        start_poller "$t"
        cost_before "$t" "$RAW/round$r-$t-wrk"
        run_wrk "$DURATION" "$t" "$RAW/round$r-$t.txt" || rc=$?
        cost_after "$t" "$RAW/round$r-$t-wrk"
        cost_args "$RAW/round$r-$t-wrk"
        report round "$r" "$t" "$RAW/round$r-$t.txt" "$rc" "${COST_ARGS[@]}" # -> $TMP/runs.tsv, $TMP/cost.tsv
        if uses_oha; then
            rc=0
            cost_before "$t" "$RAW/round$r-$t-oha"
            run_oha "$DURATION" "$t" "$RAW/round$r-$t-oha.json" || rc=$?
            cost_after "$t" "$RAW/round$r-$t-oha"
            cost_args "$RAW/round$r-$t-oha"
            report oha-round "$r" "$t" "$RAW/round$r-$t-oha.json" "$rc" "${COST_ARGS[@]}" # -> $TMP/oha-runs.tsv, cost.tsv
        fi
        stop_poller
    done
done
if want gateway-dashboard; then
    polls=$(grep -c . "$TMP/dashboard-polls.txt" 2>/dev/null || true)
    ok=$(grep -c '^200$' "$TMP/dashboard-polls.txt" 2>/dev/null || true)
    echo "== gateway-dashboard: /api/stats answered 200 to ${ok:-0} of ${polls:-0} polls during its runs"
    (( ${ok:-0} > 0 && ${ok:-0} == ${polls:-0} )) || die "gateway-dashboard: the dashboard's polls failed (see $TMP/dashboard-polls.txt)"
fi

# ---------------------------------------------------------------- summary
# A server that died during the run invalidates its numbers (and is a bug).
find_died
for g in "${FULL_GATEWAYS[@]}"; do metrics_of "$g" >"$TMP/$g-end.metrics"; done
if any_target is_redis; then redis_info >"$TMP/redis-end.info"; fi
report run-report "${TARGET_LIST[@]}" # the table, the counters, the logs; $TMP/results-body.txt
finish --body "$TMP/results-body.txt"
echo "== raw ${TOOL_LIST[*]} outputs: $RAW"
