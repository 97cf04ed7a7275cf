#!/usr/bin/env bash
# Load test: the gateway (full and --bare) against nginx as a reverse proxy, all in
# front of the same nginx upstream, on loopback. See loadtest/README.md.
#
# Knobs (environment):
#   DURATION=8        seconds per wrk run
#   ROUNDS=3          interleaved rounds (each round runs every target once)
#   CONNECTIONS=64    wrk connections
#   WRK_THREADS=2     wrk threads
#   THREADS=2         gateway server.threads
#   TARGETS="upstream nginx gateway gateway-bare"   subset/order (spaces or commas)
#   ACCESS_LOG=on     gateway access log (on|off), written to a file in the temp dir
#   KEEP_ACCESS_LOG=0 keep that file after the run (it can be hundreds of MB)
#   WARMUP=1          seconds of unrecorded wrk per target before round 1 (0: none)
#   GATEWAY_BIN=...   use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
THREADS=${THREADS:-2}
TARGETS=${TARGETS:-upstream nginx gateway gateway-bare}
ACCESS_LOG=${ACCESS_LOG:-on}
KEEP_ACCESS_LOG=${KEEP_ACCESS_LOG:-0}
WARMUP=${WARMUP:-1}
GATEWAY_BIN=${GATEWAY_BIN:-}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
READY_TIMEOUT=10 # seconds to wait for each server to answer

die() { echo "run.sh: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

for v in DURATION ROUNDS CONNECTIONS WRK_THREADS THREADS; do
    is_uint "${!v}" && (( ${!v} > 0 )) || die "$v must be a positive integer, got '${!v}'"
done
is_uint "$WARMUP" || die "WARMUP must be a whole number of seconds, got '$WARMUP'"
case $ACCESS_LOG in
    on | off) ;;
    *) die "ACCESS_LOG must be on or off, got '$ACCESS_LOG'" ;;
esac
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS

read -r -a TARGET_LIST <<<"${TARGETS//,/ }"
(( ${#TARGET_LIST[@]} > 0 )) || die "TARGETS is empty"
for t in "${TARGET_LIST[@]}"; do
    case $t in
        upstream | nginx | gateway | gateway-bare) ;;
        *) die "unknown target '$t' (choose from: upstream nginx gateway gateway-bare)" ;;
    esac
done
want() { local t; for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }

for tool in wrk curl python3 timeout "$NGINX"; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

# ---------------------------------------------------------------- processes & cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-loadtest.XXXXXX")
declare -a PROC_NAMES=() PROC_PIDS=()

alive() { # pid: running (a zombie not yet reaped does not count)
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

stop_all() {
    local i pid deadline any kids=()
    if [[ -n ${WRK_PID:-} ]] && alive "$WRK_PID"; then
        kill -TERM "$WRK_PID" 2>/dev/null || true # timeout passes it on to wrk
        PROC_PIDS+=("$WRK_PID")
    fi
    # Newest first: gateways, then the nginx proxy, then the upstream.
    for (( i = ${#PROC_PIDS[@]} - 1; i >= 0; i-- )); do
        pid=${PROC_PIDS[i]}
        alive "$pid" || continue
        # Remember the children (nginx workers) in case the master must be killed.
        # shellcheck disable=SC2207
        kids+=($(ps -o pid= --ppid "$pid" 2>/dev/null || true))
        kill -TERM "$pid" 2>/dev/null || true # nginx: fast shutdown; gateway: graceful (~2 s here)
    done
    deadline=$(( SECONDS + 8 ))
    while (( SECONDS < deadline )); do
        any=0
        for pid in "${PROC_PIDS[@]}" "${kids[@]}"; do alive "$pid" && any=1 && break; done
        (( any )) || break
        sleep 0.1
    done
    for pid in "${PROC_PIDS[@]}" "${kids[@]}"; do
        if alive "$pid"; then
            echo "run.sh: pid $pid did not stop after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PROC_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PROC_PIDS=()
    PROC_NAMES=()
}

cleanup() {
    local rc=$?
    trap '' INT TERM HUP # let the clean-up finish; it is bounded (~8 s)
    trap - EXIT
    set +e
    stop_all
    if [[ -f $TMP/gateway-access.log && $KEEP_ACCESS_LOG != 1 ]]; then
        rm -f "$TMP/gateway-access.log"
    fi
    rm -rf "$TMP/bin" # the private copy of the gateway binary (~50 MB)
    echo "temp dir (raw wrk outputs, configs, logs): $TMP" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT
trap 'echo "run.sh: terminated" >&2; exit 143' TERM
trap 'echo "run.sh: hung up" >&2; exit 129' HUP

started() { PROC_NAMES+=("$1"); PROC_PIDS+=("$2"); }

# Polls until URL answers 2xx (and, when EXPECT is given, with that body), the
# process dies, or READY_TIMEOUT passes.
wait_ready() { # name pid url [expected-body] [logfile]
    local name=$1 pid=$2 url=$3 expect=${4:-} log=${5:-} body
    local deadline=$(( SECONDS + READY_TIMEOUT ))
    while :; do
        if ! alive "$pid"; then
            echo "run.sh: $name (pid $pid) exited during start-up" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ -z $expect || $body == "$expect" ]]; then
            return 0
        fi
        if (( SECONDS >= deadline )); then
            echo "run.sh: $name not ready at $url after ${READY_TIMEOUT}s" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

render() { # template output KEY=VALUE...
    local tmpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tmpl" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unreplaced placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | sort -u | tr '\n' ' ')"; fi
}

show_load() { # label
    echo "== machine load ($1): $(uptime)"
    if command -v top >/dev/null; then
        top -b -n 1 -o %CPU 2>/dev/null | awk 'NR > 7 && $9 + 0 >= 5 { printf "   %5s%% cpu  %s (pid %s)\n", $9, $12, $1 }' | head -n 5 || true
    fi
}

# ---------------------------------------------------------------- set-up
echo "== gateway load test: DURATION=${DURATION}s ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS THREADS=$THREADS ACCESS_LOG=$ACCESS_LOG TARGETS='${TARGET_LIST[*]}'"
echo "== temp dir: $TMP"
show_load start
LOAD_START=$(uptime | sed 's/.*load average: //')

if want gateway || want gateway-bare; then
    if [[ -z $GATEWAY_BIN ]]; then
        echo "== cargo build --release"
        (cd "$ROOT" && cargo build --release)
        GATEWAY_BIN=$ROOT/target/release/gateway
    fi
    [[ -x $GATEWAY_BIN ]] || die "gateway binary not found or not executable: $GATEWAY_BIN"
    # Run a private copy, so a concurrent rebuild cannot swap it between runs.
    mkdir -p "$TMP/bin"
    cp "$GATEWAY_BIN" "$TMP/bin/gateway"
    GW=$TMP/bin/gateway
    echo "== gateway binary: $GATEWAY_BIN ($("$GW" --version 2>/dev/null | head -n 1 || true))"
fi

# Six distinct free loopback ports, held open together while they are chosen.
ports=$(python3 -c '
import socket
socks = []
for _ in range(6):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
')
read -r P_UPSTREAM P_NGINX P_GW P_GW_ADMIN P_BARE P_BARE_ADMIN <<<"$ports"

if (( EUID == 0 )); then USER_DIRECTIVE="user root;"; else USER_DIRECTIVE=""; fi

start_nginx() { # name port template [extra KEY=VALUE...]
    local name=$1 port=$2 tmpl=$3 d
    shift 3
    for d in body proxy fastcgi uwsgi scgi; do mkdir -p "$TMP/$name-tmp/$d"; done
    mkdir -p "$TMP/$name-prefix"
    render "$tmpl" "$TMP/$name.conf" DIR="$TMP" PORT="$port" USER_DIRECTIVE="$USER_DIRECTIVE" "$@"
    "$NGINX" -t -q -p "$TMP/$name-prefix/" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        || die "$name: nginx -t failed for $TMP/$name.conf"
    "$NGINX" -p "$TMP/$name-prefix/" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        >"$TMP/$name.out" 2>&1 &
    started "$name" $!
    wait_ready "$name" $! "http://127.0.0.1:$port/" ok "$TMP/$name-error.log"
    echo "== $name: nginx pid $(cat "$TMP/$name.pid" 2>/dev/null || echo '?') on 127.0.0.1:$port"
}

gateway_conf() { # name port admin-port: renders and validates $TMP/name.yaml
    local name=$1 port=$2 admin=$3 conf=$TMP/$1.yaml enabled=true check
    [[ $ACCESS_LOG == on ]] || enabled=false
    render "$SCRIPT_DIR/gateway.yaml.tmpl" "$conf" DIR="$TMP" NAME="$name" PORT="$port" \
        ADMIN_PORT="$admin" THREADS="$THREADS" UPSTREAM_PORT="$P_UPSTREAM" \
        ACCESS_LOG_ENABLED="$enabled" ACCESS_LOG_FILE="$TMP/$name-access.log"
    check=$("$GW" --check-config "$conf" 2>&1) || die "$name: invalid config $conf: $check"
    [[ $check == ok ]] || die "$name: '$GW --check-config' printed '$check', not 'ok' (is it a real gateway build?)"
}

start_gateway() { # name port admin-port [--bare]
    local name=$1 port=$2 admin=$3 bare=${4:-} conf=$TMP/$1.yaml log=$TMP/$1.log
    # shellcheck disable=SC2086
    "$GW" $bare -c "$conf" >"$log" 2>&1 &
    started "$name" $!
    local pid=$!
    if [[ -z $bare ]]; then
        # Ready = the health check saw the upstream, and a request goes through.
        wait_ready "$name /readyz" "$pid" "http://127.0.0.1:$admin/readyz" "" "$log"
    fi
    wait_ready "$name" "$pid" "http://127.0.0.1:$port/" ok "$log"
    if [[ -n $bare ]]; then
        echo "== $name ($bare): pid $pid on 127.0.0.1:$port"
    else
        echo "== $name: pid $pid on 127.0.0.1:$port (admin 127.0.0.1:$admin)"
    fi
}

# Configs first, so a bad binary or template fails before anything is started.
if want gateway; then gateway_conf gateway "$P_GW" "$P_GW_ADMIN"; fi
if want gateway-bare; then gateway_conf gateway-bare "$P_BARE" "$P_BARE_ADMIN"; fi

start_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
if want nginx; then
    start_nginx nginx-proxy "$P_NGINX" "$SCRIPT_DIR/nginx-proxy.conf.tmpl" UPSTREAM_PORT="$P_UPSTREAM"
fi
if want gateway; then
    start_gateway gateway "$P_GW" "$P_GW_ADMIN"
fi
if want gateway-bare; then
    start_gateway gateway-bare "$P_BARE" "$P_BARE_ADMIN" --bare
fi

# The gateway must really proxy, and add a request id.
if want gateway; then
    hdrs=$TMP/check-gateway.headers
    body=$(curl -sS --max-time 5 -D "$hdrs" "http://127.0.0.1:$P_GW/loadtest-check") \
        || die "gateway check request failed"
    [[ $body == ok ]] || die "gateway check: expected body 'ok', got '$body'"
    rid=$(awk 'tolower($1) == "x-request-id:" { print $2 }' "$hdrs" | tr -d '\r')
    [[ -n $rid ]] || die "gateway check: no x-request-id response header (headers in $hdrs)"
    echo "== gateway check: body 'ok', x-request-id: $rid"
fi

declare -A URL=(
    [upstream]="http://127.0.0.1:$P_UPSTREAM/"
    [nginx]="http://127.0.0.1:$P_NGINX/"
    [gateway]="http://127.0.0.1:$P_GW/"
    [gateway-bare]="http://127.0.0.1:$P_BARE/"
)

# ---------------------------------------------------------------- measurement
# wrk output -> "rps p50_ms p99_ms non2xx socket_errors requests" (NA when missing)
parse_wrk() {
    awk '
        function ms(v,   n, u) {
            n = v; sub(/[a-z]+$/, "", n)
            u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n + 0
            if (u == "s")  return n * 1000
            if (u == "m")  return n * 60000
            if (u == "h")  return n * 3600000
            return "NA"
        }
        /Latency Distribution/ { dist = 1; next }
        dist && $1 == "50%" { p50 = ms($2) }
        dist && $1 == "99%" { p99 = ms($2); dist = 0 }
        /requests in/ { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(",", ""); sockerr = $4 + $6 + $8 + $10 }
        END {
            printf "%s %s %s %d %d %s\n", (rps == "" ? "NA" : rps), (p50 == "" ? "NA" : p50),
                (p99 == "" ? "NA" : p99), non2xx, sockerr, (reqs == "" ? "NA" : reqs)
        }' "$1"
}

# wrk runs in the background and the script waits for it: a Ctrl-C then interrupts
# `wait` and runs the INT trap at once. (With wrk in the foreground, wrk catches
# SIGINT and exits normally, and bash then ignores the Ctrl-C and carries on.)
WRK_PID=
run_wrk() { # seconds url outfile
    local rc=0
    timeout -k 5 $(( $1 + 20 )) \
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --latency "$2" >"$3" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=
    return "$rc"
}

RAW=$TMP/raw
mkdir -p "$RAW"
RUNS=$TMP/runs.tsv
printf 'round\ttarget\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\twrk_rc\n' >"$RUNS"

if (( WARMUP > 0 )); then
    echo "== warm-up: ${WARMUP}s per target (not recorded)"
    for t in "${TARGET_LIST[@]}"; do
        run_wrk "$WARMUP" "${URL[$t]}" "$RAW/warmup-$t.txt" || echo "   warm-up of $t: wrk exited $?" >&2
    done
fi

echo "== $ROUNDS round(s) x ${#TARGET_LIST[@]} target(s) x ${DURATION}s (raw outputs in $RAW)"
for (( r = 1; r <= ROUNDS; r++ )); do
    for t in "${TARGET_LIST[@]}"; do
        out=$RAW/round$r-$t.txt
        rc=0
        run_wrk "$DURATION" "${URL[$t]}" "$out" || rc=$?
        read -r rps p50 p99 non2xx sockerr reqs < <(parse_wrk "$out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$rps" "$p50" "$p99" "$non2xx" "$sockerr" "$reqs" "$rc" >>"$RUNS"
        printf '   round %d  %-13s %10s req/s  p50 %8s ms  p99 %8s ms%s\n' "$r" "$t" "$rps" "$p50" "$p99" \
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
ratio() {
    local base=${MED_RPS[nginx]:-NA} v=${MED_RPS[$1]}
    if [[ $base == NA || $v == NA ]]; then echo "-"; else awk -v a="$v" -v b="$base" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }'; fi
}

SUMMARY=$TMP/summary.tsv
printf 'target\tmedian_rps\tmedian_p50_ms\tmedian_p99_ms\trps_vs_nginx\tnon2xx_total\tsocket_errors_total\n' >"$SUMMARY"
for t in "${TARGET_LIST[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${MED_RPS[$t]}" "${MED_P50[$t]}" "${MED_P99[$t]}" "$(ratio "$t")" \
        "$(sum_col 6 "$t")" "$(sum_col 7 "$t")" >>"$SUMMARY"
done

echo
echo "== medians over $ROUNDS round(s), ${DURATION}s each, $CONNECTIONS connections"
awk -F'\t' '
    NR == 1 { printf "%-14s %12s %10s %10s %10s %8s %8s\n", "target", "req/s", "p50 ms", "p99 ms", "vs nginx", "non-2xx", "sock-err"; next }
    {
        rps = ($2 == "NA" ? "NA" : sprintf("%.0f", $2))
        p50 = ($3 == "NA" ? "NA" : sprintf("%.3f", $3))
        p99 = ($4 == "NA" ? "NA" : sprintf("%.3f", $4))
        printf "%-14s %12s %10s %10s %10s %8s %8s\n", $1, rps, p50, p99, $5, $6, $7
    }' "$SUMMARY"
echo

# A server that died during the run invalidates its numbers (and is a bug).
DIED=()
for i in "${!PROC_PIDS[@]}"; do
    if ! alive "${PROC_PIDS[i]}"; then
        DIED+=("${PROC_NAMES[i]}")
        echo "== WARNING: ${PROC_NAMES[i]} (pid ${PROC_PIDS[i]}) exited during the run; see its log in $TMP" >&2
    fi
done

GW_NOTES=()
if want gateway; then
    metrics=$(curl -fsS --max-time 5 "http://127.0.0.1:$P_GW_ADMIN/metrics" 2>/dev/null) \
        || { echo "== WARNING: could not read the gateway's /metrics" >&2; metrics=; }
    gw_5xx=$(awk 'NF { n++ } /^gateway_requests_total\{/ && /status="5[0-9][0-9]"/ { s += $NF } END { print (n ? s + 0 : "NA") }' <<<"$metrics")
    gw_total=$(awk 'NF { n++ } /^gateway_requests_total\{/ { s += $NF } END { print (n ? s + 0 : "NA") }' <<<"$metrics")
    gw_dropped=$(awk '/^gateway_access_log_dropped_total / { print $NF }' <<<"$metrics")
    GW_NOTES+=("gateway_5xx=$gw_5xx" "gateway_requests_total=$gw_total" "gateway_access_log_dropped=${gw_dropped:-NA}")
    echo "== gateway /metrics: ${gw_5xx} responses with status 5xx, ${gw_total} requests in total, access-log lines dropped: ${gw_dropped:-NA}"
    if [[ $ACCESS_LOG == on && -f $TMP/gateway-access.log ]]; then
        lines=$(wc -l <"$TMP/gateway-access.log")
        echo "== gateway access log: $lines lines, $(du -h "$TMP/gateway-access.log" | cut -f1)"
        GW_NOTES+=("gateway_access_log_lines=$lines")
    fi
fi
for t in "${TARGET_LIST[@]}"; do
    echo "== $t: wrk non-2xx/3xx responses $(sum_col 6 "$t"), socket errors $(sum_col 7 "$t")"
done
for name in gateway gateway-bare; do
    want "$name" || continue
    n=$(grep -cE ' (WARN|ERROR) ' "$TMP/$name.log" || true)
    if (( n > 0 )); then
        echo "== $name log: $n warning/error line(s), most frequent ($TMP/$name.log):"
        grep -E ' (WARN|ERROR) ' "$TMP/$name.log" | sed -E 's/^\[[^ ]+ //; s/[0-9]+/N/g' |
            sort | uniq -c | sort -rn | head -n 4 | cut -c1-200 | sed 's/^ */   /'
    fi
done
show_load end

# Machine-readable summary, kept in the repository's loadtest/results/.
mkdir -p "$RESULTS_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
RESULT=$RESULTS_DIR/$stamp.txt
{
    echo "# gateway load test $stamp"
    echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo NA)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
    echo "gateway_bin=${GATEWAY_BIN:-NA}"
    echo "duration_s=$DURATION rounds=$ROUNDS connections=$CONNECTIONS wrk_threads=$WRK_THREADS gateway_threads=$THREADS access_log=$ACCESS_LOG warmup_s=$WARMUP"
    echo "cpus=$(nproc) nginx=$("$NGINX" -v 2>&1 | sed 's|.*/||') wrk=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')"
    echo "load_start=$LOAD_START"
    echo "load_end=$(uptime | sed 's/.*load average: //')"
    (( ${#GW_NOTES[@]} == 0 )) || echo "${GW_NOTES[*]}"
    (( ${#DIED[@]} == 0 )) || echo "died_during_run=${DIED[*]}"
    echo "raw_dir=$RAW"
    echo "## summary"
    cat "$SUMMARY"
    echo "## runs"
    cat "$RUNS"
} >"$RESULT"
echo "== summary written to $RESULT"
echo "== raw wrk outputs: $RAW"
