# shellcheck shell=bash
# Shared helpers of the load-test scripts (run.sh, ratelimit.sh, regions.sh, breaker.sh,
# slowloris.sh, ab.sh), sourced by each right after `set -euo pipefail`:
#   . "$(dirname "$0")/lib.sh"
# It defines functions and a few defaults only; each script keeps its own knobs and
# scenarios. What they measure is parsed, added up and printed by report.py (`report
# SUBCOMMAND ...`, python3 stdlib only), from files the scripts leave in $TMP.
#
# Processes: a script registers each server it starts with `started NAME PID`
# (PROC_NAMES/PROC_PIDS) and each background helper (wrk, oha, samplers, listeners) with
# `bg_started PID` (BG_PIDS). `setup_tmp` installs the EXIT trap, `cleanup`, which
# stops all of them (helpers first, then the servers newest first). Optional hooks a
# script may define: `cleanup_extra_pids` (prints more pids to stop, e.g. nginx
# workers whose master was killed) and `on_cleanup` (removes files from the temp dir).

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PROG=${0##*/} # the script's name, in front of its error messages

# Knobs shared by the scripts (environment).
GATEWAY_BIN=${GATEWAY_BIN:-}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
# run.sh's other proxies to compare with: HAProxy (Debian package haproxy) and pingap
# (`cargo install pingap --version 0.13.1 --locked`, in $CARGO_HOME/bin)
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
PINGAP=${PINGAP:-$(command -v pingap || echo "${CARGO_HOME:-$HOME/.cargo}/bin/pingap")}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
REDIS_CLI=${REDIS_CLI:-$(command -v redis-cli || echo /usr/bin/redis-cli)}
export LOADTEST_NGINX=$NGINX LOADTEST_REDIS_SERVER=$REDIS_SERVER # (report.py asks them their versions)
export LOADTEST_HAPROXY=$HAPROXY LOADTEST_PINGAP=$PINGAP
READY_TIMEOUT=10 # seconds to wait for each server to answer
if (( EUID == 0 )); then USER_DIRECTIVE="user root;"; else USER_DIRECTIVE=""; fi

# ---------------------------------------------------------------- checks of the knobs
die() { echo "$PROG: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Dies unless each named variable holds a positive integer.
require_positive() { # var...
    local v
    for v in "$@"; do
        is_uint "${!v}" && (( ${!v} > 0 )) || die "$v must be a positive integer, got '${!v}'"
    done
}

# Dies unless the named variable is "on" or "off".
require_on_off() { # var
    case ${!1} in
        on | off) ;;
        *) die "$1 must be on or off, got '${!1}'" ;;
    esac
}

# Splits the list in variable VAR (spaces or commas) into the array ARRAY; dies when
# it is empty or holds a word that is not one of CHOICES.
parse_list() { # VAR ARRAY what "choices"
    local -n _list=$2
    local _words=${!1} _w
    read -r -a _list <<<"${_words//,/ }"
    (( ${#_list[@]} > 0 )) || die "$1 is empty"
    for _w in "${_list[@]}"; do
        [[ " $4 " == *" $_w "* ]] || die "unknown $3 '$_w' (choose from: $4)"
    done
}

# Dies unless every tool is on PATH (or an executable path).
require_tools() { # tool...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "'$tool' not found"
    done
}

# ---------------------------------------------------------------- processes & cleanup
declare -a PROC_NAMES=() PROC_PIDS=() BG_PIDS=() DIED=()

alive() { # pid: running (a zombie not yet reaped does not count)
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

started() { PROC_NAMES+=("$1"); PROC_PIDS+=("$2"); } # name pid: register a server
bg_started() { BG_PIDS+=("$1"); }                     # pid: register a background helper
bg_done() { # pid: forget a background helper that has ended
    local keep=() p
    for p in "${BG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    BG_PIDS=("${keep[@]}")
}
# GETs URL once a second in the background (what the live dashboard's open page does
# with /api/stats), each answer's status a line of OUTFILE; POLL_PID is the poller,
# stopped by stop_poll.
poll_each_second() { # url outfile
    ( while :; do
          curl -s -o /dev/null --max-time 2 -w '%{http_code}\n' "$1" >>"$2" || true
          sleep 1
      done ) &
    POLL_PID=$!
    bg_started "$POLL_PID"
}
stop_poll() { # pid
    kill "$1" 2>/dev/null || true
    wait_bg "$1" || true
}
wait_bg() { # pid: wait for a background helper and forget it; its exit status
    local rc=0
    wait "$1" || rc=$?
    bg_done "$1"
    return "$rc"
}

# SIGTERM to the given pids (the last one first), SIGKILL to what is left after 8 s.
stop_pids() { # pid...
    local i pid deadline any pids=("$@") kids=()
    for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do
        pid=${pids[i]}
        alive "$pid" || continue
        # Remember the children (nginx workers) in case the master must be killed.
        # shellcheck disable=SC2207
        kids+=($(ps -o pid= --ppid "$pid" 2>/dev/null || true))
        kill -TERM "$pid" 2>/dev/null || true # nginx: fast shutdown; gateway: graceful; timeout: passed on to wrk
    done
    deadline=$(( SECONDS + 8 ))
    while (( SECONDS < deadline )); do
        any=0
        for pid in "${pids[@]}" "${kids[@]}"; do alive "$pid" && any=1 && break; done
        (( any )) || break
        sleep 0.1
    done
    for pid in "${pids[@]}" "${kids[@]}"; do
        if alive "$pid"; then
            echo "$PROG: pid $pid did not stop after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# Stops the registered servers whose names match one of the patterns (globs, e.g.
# "r1-*") and forgets them.
stop_named() { # name-pattern...
    local i n hit pids=() keep_n=() keep_p=()
    for i in "${!PROC_PIDS[@]}"; do
        hit=0
        # shellcheck disable=SC2053
        for n in "$@"; do [[ ${PROC_NAMES[i]} == $n ]] && hit=1; done
        if (( hit )); then
            pids+=("${PROC_PIDS[i]}")
        else
            keep_n+=("${PROC_NAMES[i]}")
            keep_p+=("${PROC_PIDS[i]}")
        fi
    done
    PROC_NAMES=("${keep_n[@]}")
    PROC_PIDS=("${keep_p[@]}")
    (( ${#pids[@]} == 0 )) || stop_pids "${pids[@]}"
}

# The EXIT trap: stops the background helpers, then the servers (newest first:
# gateways give their Redis leases back before Redis goes), then the hook's extra
# pids; runs the on_cleanup hook, removes the private gateway binary and says where
# the temp dir is. Keeps the script's exit status.
cleanup() {
    local rc=$? extra=()
    trap '' INT TERM HUP # let the clean-up finish; it is bounded (~8 s)
    trap - EXIT
    set +e
    if declare -F cleanup_extra_pids >/dev/null; then
        read -r -a extra <<<"$(cleanup_extra_pids | tr '\n' ' ')"
    fi
    stop_pids "${extra[@]}" "${PROC_PIDS[@]}" "${BG_PIDS[@]}"
    PROC_NAMES=() PROC_PIDS=() BG_PIDS=()
    if declare -F on_cleanup >/dev/null; then on_cleanup; fi
    rm -rf "$TMP/bin" # the private copy of the gateway binary (~50 MB)
    echo "temp dir ($TMP_HOLDS): $TMP" >&2
    exit "$rc"
}

# Creates the temp dir TMP ($TMPDIR/PREFIX.XXXXXX, also report.py's LOADTEST_TMP) and
# installs the traps: `cleanup` on exit; INT, TERM and HUP exit 130, 143 and 129
# (through `cleanup`).
setup_tmp() { # prefix what-the-temp-dir-holds (for the closing message)
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    export LOADTEST_TMP=$TMP
    TMP_HOLDS=$2
    trap cleanup EXIT
    trap 'echo "$PROG: interrupted" >&2; exit 130' INT
    trap 'echo "$PROG: terminated" >&2; exit 143' TERM
    trap 'echo "$PROG: hung up" >&2; exit 129' HUP
}

# Sets DIED to the names of the registered servers that are no longer running (a
# server that died during the run invalidates its numbers), warning for each.
find_died() {
    local i
    DIED=()
    for i in "${!PROC_PIDS[@]}"; do
        if ! alive "${PROC_PIDS[i]}"; then
            DIED+=("${PROC_NAMES[i]}")
            echo "== WARNING: ${PROC_NAMES[i]} (pid ${PROC_PIDS[i]}) exited during the run; see its log in $TMP" >&2
        fi
    done
}

# ---------------------------------------------------------------- small utilities
# Polls until URL answers 2xx (and, when EXPECT is given, with that body), the
# process dies, or READY_TIMEOUT passes. HEADER (e.g. an Authorization) is sent along.
wait_ready() { # name pid url [expected-body] [logfile] [header]
    local name=$1 pid=$2 url=$3 expect=${4:-} log=${5:-} body hdr=()
    [[ -z ${6:-} ]] || hdr=(-H "$6")
    local deadline=$(( SECONDS + READY_TIMEOUT ))
    while :; do
        if ! alive "$pid"; then
            echo "$PROG: $name (pid $pid) exited during start-up" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        if body=$(curl -fsS --max-time 1 "${hdr[@]}" "$url" 2>/dev/null) && [[ -z $expect || $body == "$expect" ]]; then
            return 0
        fi
        if (( SECONDS >= deadline )); then
            echo "$PROG: $name not ready at $url after ${READY_TIMEOUT}s" >&2
            [[ -n $log && -f $log ]] && tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Renders a template: KEY=VALUE replaces @KEY@. +SECTION keeps the template's lines
# that start with "#+SECTION " (without that marker); lines of sections not given are
# dropped. Dies if a placeholder is left.
render() { # template output [KEY=VALUE | +SECTION]...
    local tmpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do
        if [[ $kv == +* ]]; then
            args+=(-e "s|^#${kv} ||")
        else
            args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
        fi
    done
    args+=(-e '/^#+[A-Z_]* /d')
    sed "${args[@]}" "$tmpl" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unreplaced placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | sort -u | tr '\n' ' ')"; fi
}

now_s() { date +%s.%N; }        # wall clock, seconds with nanoseconds
cpu_ticks() { # pid...: their user + system CPU time so far, in clock ticks, with their children (nginx workers)
    local p f t=0 pids=("$@")
    # shellcheck disable=SC2207
    for p in "$@"; do pids+=($(ps -o pid= --ppid "$p" 2>/dev/null || true)); done
    for p in "${pids[@]}"; do
        { read -r f <"/proc/$p/stat"; } 2>/dev/null || continue # (gone)
        read -r -a f <<<"${f##*) }" # the fields after the command's name: 3 (state) onwards
        t=$(( t + f[11] + f[12] ))  # fields 14 and 15: utime, stime
    done
    echo "$t"
}
# The /proc/PID/stat lines of the given processes and of their children (nginx's
# workers), one a line: report.py's proc_ticks sums their utime + stime (a process's
# line counts all its threads). A process that is gone has no line.
proc_stats() { # pid...
    local p line pids=("$@")
    # shellcheck disable=SC2207
    for p in "$@"; do pids+=($(ps -o pid= --ppid "$p" 2>/dev/null || true)); done
    for p in "${pids[@]}"; do
        if { read -r line <"/proc/$p/stat"; } 2>/dev/null; then printf '%s\n' "$line"; fi
    done
}
calc() { awk "BEGIN { $1 }"; } # calc 'exit !(0.2 < 1)'

# Sets the array PORTS to N distinct free loopback ports, held open together while
# they are chosen.
free_ports() { # n
    local out
    out=$(report ports "$1") || die "could not get $1 free ports"
    read -r -a PORTS <<<"$out"
    (( ${#PORTS[@]} == $1 )) || die "could not get $1 free ports"
}

# ---------------------------------------------------------------- servers
# Builds the gateway (`cargo build --release`) unless GATEWAY_BIN is set, and runs a
# private copy of it, GW=$TMP/bin/gateway, so a concurrent rebuild cannot swap it
# between runs.
prepare_gateway() {
    if [[ -z $GATEWAY_BIN ]]; then
        echo "== cargo build --release"
        (cd "$ROOT" && cargo build --release)
        GATEWAY_BIN=$ROOT/target/release/gateway
    fi
    [[ -x $GATEWAY_BIN ]] || die "gateway binary not found or not executable: $GATEWAY_BIN"
    mkdir -p "$TMP/bin"
    cp "$GATEWAY_BIN" "$TMP/bin/gateway"
    GW=$TMP/bin/gateway
    echo "== gateway binary: $GATEWAY_BIN ($("$GW" --version 2>/dev/null | head -n 1 || true))"
}

# Dies unless `$GW --check-config CONF` accepts the config (and prints "ok").
gateway_check_config() { # name conf
    local check
    check=$("$GW" --check-config "$2" 2>&1) || die "$1: invalid config $2: $check"
    [[ $check == ok ]] || die "$1: '$GW --check-config' printed '$check', not 'ok' (is it a real gateway build?)"
}

# Starts $GW [ARGS...] -c $TMP/NAME.yaml in the background, its output in
# $TMP/NAME.log, registers it as NAME (GW_PID is its pid) and, given ADMIN-PORT,
# waits for its /readyz (the health check saw the upstream).
gateway_launch() { # name admin-port|"" [gateway args...]
    local name=$1 admin=$2 log=$TMP/$1.log
    shift 2
    "$GW" "$@" -c "$TMP/$name.yaml" >"$log" 2>&1 &
    GW_PID=$!
    started "$name" "$GW_PID"
    if [[ -n $admin ]]; then
        wait_ready "$name /readyz" "$GW_PID" "http://127.0.0.1:$admin/readyz" "" "$log"
    fi
}

# Renders the nginx TEMPLATE (DIR, NAME, PORT, USER_DIRECTIVE and the extra
# arguments) to DIR/BASE.conf, checks it with `nginx -t`, starts nginx in the
# background (prefix DIR/BASE-prefix/, start-up errors in DIR/BASE-error.log, output in
# DIR/BASE.out), registers it as NAME (NGINX_PID is the master) and waits until it
# answers "ok" on PORT.
start_nginx_in() { # dir base name port template [KEY=VALUE | +SECTION]...
    local dir=$1 base=$2 name=$3 port=$4 tmpl=$5 d
    shift 5
    for d in body proxy fastcgi uwsgi scgi; do mkdir -p "$dir/$base-tmp/$d"; done
    mkdir -p "$dir/$base-prefix"
    render "$tmpl" "$dir/$base.conf" DIR="$dir" NAME="$base" PORT="$port" USER_DIRECTIVE="$USER_DIRECTIVE" "$@"
    "$NGINX" -t -q -p "$dir/$base-prefix/" -c "$dir/$base.conf" -e "$dir/$base-error.log" \
        || die "$name: nginx -t failed for $dir/$base.conf"
    "$NGINX" -p "$dir/$base-prefix/" -c "$dir/$base.conf" -e "$dir/$base-error.log" \
        >"$dir/$base.out" 2>&1 &
    NGINX_PID=$!
    started "$name" "$NGINX_PID"
    wait_ready "$name" "$NGINX_PID" "http://127.0.0.1:$port/" ok "$dir/$base-error.log"
}
# The same with the files in $TMP, named after NAME ($TMP/NAME.conf, ...).
start_nginx() { # name port template [KEY=VALUE | +SECTION]...
    start_nginx_in "$TMP" "$1" "$@"
}

# Starts redis-server on 127.0.0.1:PORT (no persistence, log in $TMP/NAME.log),
# registers it as NAME and waits for its PONG.
start_redis() { # name port
    local name=$1 port=$2 pid deadline=$(( SECONDS + READY_TIMEOUT ))
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/$name.log" --daemonize no >"$TMP/$name.out" 2>&1 &
    pid=$!
    started "$name" "$pid"
    until [[ $("$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; do
        if ! alive "$pid"; then
            echo "$PROG: $name (pid $pid) exited during start-up" >&2
            tail -n 20 "$TMP/$name.log" "$TMP/$name.out" >&2 2>/dev/null
            return 1
        fi
        if (( SECONDS >= deadline )); then
            echo "$PROG: $name not ready on 127.0.0.1:$port after ${READY_TIMEOUT}s" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "== $name: pid $pid on 127.0.0.1:$port ($("$REDIS_SERVER" --version | cut -d' ' -f3))"
}
redis_info() { # Redis's (on P_REDIS) INFO commandstats (report.py reads its EVALSHA count)
    "$REDIS_CLI" -h 127.0.0.1 -p "$P_REDIS" info commandstats 2>/dev/null || true
}

# ---------------------------------------------------------------- /metrics
# The /metrics text of the gateway whose admin listener is on 127.0.0.1:PORT
# (curl's exit status when it cannot be read).
metrics_at() { # admin-port [max-time-seconds, default 5]
    curl -fsS --max-time "${2:-5}" "http://127.0.0.1:$1/metrics"
}

# ---------------------------------------------------------------- wrk
# Starts `wrk ARGS...` in the background under a hard timeout (SECONDS + 20 s), its
# output in OUTFILE; WRK_PID is its pid, registered as a background helper. Wait for
# it with wait_bg: waiting (not running wrk in the foreground) lets a Ctrl-C run the
# INT trap at once. (With wrk in the foreground, wrk catches SIGINT and exits
# normally, and bash then ignores the Ctrl-C and carries on.)
wrk_bg() { # seconds outfile wrk-args...
    timeout -k 5 $(( $1 + 20 )) wrk "${@:3}" >"$2" 2>&1 &
    WRK_PID=$!
    bg_started "$WRK_PID"
}

# Runs wrk under wrk_bg and waits for it; its exit status.
wrk_run() { # seconds outfile wrk-args...
    wrk_bg "$@"
    wait_bg "$WRK_PID"
}

# ---------------------------------------------------------------- oha
# oha (https://github.com/hatoo/oha), the second load generator of run.sh. OHA is its
# binary: on PATH, or where `cargo install` puts it.
OHA=${OHA:-$(command -v oha || echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha")}
OHA_ARGS=() OHA_THREADS= # (set by oha_flags)

# Sets OHA_ARGS to the options this oha needs for a JSON report and no TUI, and to
# its worker-thread option when it has one and THREADS is given (OHA_THREADS: the
# number, or "default"); dies when its --help
# shows no JSON output (older releases have -j/--json, newer --output-format json).
oha_flags() { # [threads]
    local help
    help=$("$OHA" --help 2>&1) || die "'$OHA --help' failed: $help"
    OHA_ARGS=(--no-tui)
    if [[ $help == *--output-format* ]]; then
        OHA_ARGS+=(--output-format json)
    elif [[ $help == *--json* ]]; then
        OHA_ARGS+=(--json)
    else
        die "$OHA has neither --output-format nor --json: cannot read its results"
    fi
    OHA_THREADS=default # (its physical cores)
    if [[ -n ${1:-} && $help == *--worker-threads* ]]; then
        OHA_ARGS+=(--worker-threads "$1")
        OHA_THREADS=$1
    fi
}

# Runs `oha OHA_ARGS ARGS...` like wrk_run (hard timeout SECONDS + 20 s, waited for in
# the background): its JSON report in OUTFILE, its stderr in OUTFILE.err; its exit status.
oha_run() { # seconds outfile oha-args...
    timeout -k 5 $(( $1 + 20 )) "$OHA" "${OHA_ARGS[@]}" "${@:3}" >"$2" 2>"$2.err" &
    OHA_PID=$!
    bg_started "$OHA_PID"
    wait_bg "$OHA_PID"
}

# ---------------------------------------------------------------- report.py
# report.py parses, adds up and prints what the scripts measured (see its -h, and
# README.md, "Layout"); its state is in $TMP (LOADTEST_TMP).
report() { python3 "$SCRIPT_DIR/report.py" "$@"; }
# Starts one of report.py's probes in the background (python3 itself, so that a SIGTERM
# reaches it), its output in OUTFILE, registered as a background helper; BG is its pid.
report_bg() { # outfile report-args...
    python3 "$SCRIPT_DIR/report.py" "${@:2}" >"$1" 2>&1 &
    BG=$!
    bg_started "$BG"
}
# The closing lines (machine load, verdict, ...: report.py finish's options) and the
# results file $RESULTS_DIR/<prefix given to `report begin`><UTC timestamp>.txt.
finish() { # [report finish options...]
    report finish --results-dir "$RESULTS_DIR" --gateway-bin "${GATEWAY_BIN:-NA}" --died "${DIED[*]}" "$@"
}
