#!/usr/bin/env bash
# Slow clients (slowloris) against the gateway's whole-header deadline
# (server.client_header_timeout), with nginx as a control. Release binary, one nginx
# upstream, wrk and a python3 helper (stdlib only), all on loopback. See
# loadtest/README.md ("Slow clients: slowloris.sh").
#
#   baseline   wrk -t1 -cCONNECTIONS -dDURATION --latency on the target: req/s, p50, p99.
#   attack     SLOW connections from the helper, each sending
#              "GET / HTTP/1.1\r\nHost: x\r\n" and then one more header byte every
#              TRICKLE s, never the empty line that ends the header. START_DELAY s
#              after they are all open, the same wrk runs again (normal requests during
#              the attack). The helper records when the server closed each slow
#              connection (EOF or reset, seconds after its connect) and whether it
#              answered 408, and gives up ATTACK_BOUND s after opening them.
#              gateway_downstream_connections (and the established TCP connections on
#              the target's port) are sampled throughout: before, peak, after.
#   targets    gateway (client_header_timeout HEADER_TIMEOUT, access log off), then,
#              with CONTROL=1, nginx as a reverse proxy (run.sh's nginx-proxy config with
#              client_header_timeout HEADER_TIMEOUT added) as a control.
#
# Knobs (environment):
#   HEADER_TIMEOUT=5s     gateway server.client_header_timeout and nginx
#                         client_header_timeout (NNs or NNNms, at least 100ms)
#   SLOW=500              slow connections
#   TRICKLE=1             seconds between two header bytes on each slow connection
#   ATTACK_BOUND=(HEADER_TIMEOUT + 10, in whole seconds)   the helper's bound: seconds
#                         after the slow connections are open; the ones still open
#                         then are closed by the helper and reported
#   CONNECTIONS=16        wrk connections
#   WRK_THREADS=1         wrk threads
#   DURATION=8            seconds per wrk run (baseline, and during the attack)
#   START_DELAY=1         seconds between "all slow connections open" and wrk's start
#   THREADS=2             gateway server.threads
#   CONTROL=1             also attack nginx (0: the gateway only)
#   GATEWAY_BIN=...       use this binary instead of `cargo build --release`
#   RESULTS_DIR=loadtest/results   where the summary file goes
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh" # SCRIPT_DIR, ROOT, GATEWAY_BIN, RESULTS_DIR, NGINX, helpers

HEADER_TIMEOUT=${HEADER_TIMEOUT:-5s}
SLOW=${SLOW:-500}
TRICKLE=${TRICKLE:-1}
CONNECTIONS=${CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-1}
DURATION=${DURATION:-8}
START_DELAY=${START_DELAY:-1}
THREADS=${THREADS:-2}
CONTROL=${CONTROL:-1}
SAMPLE_INTERVAL=0.2 # seconds between two samples of the open connections
OPEN_BOUND=10       # seconds the helper may spend opening the slow connections

# Targets (the gateway only; nginx is the control).
CLOSE_SLACK=1       # s: every slow connection closed by deadline + this
EARLY_SLACK=0.1     # s: and none before deadline - this

require_positive SLOW CONNECTIONS WRK_THREADS DURATION THREADS
[[ $CONTROL == [01] ]] || die "CONTROL must be 0 or 1, got '$CONTROL'"
[[ $TRICKLE =~ ^[0-9]+(\.[0-9]+)?$ ]] && calc "exit !($TRICKLE > 0)" \
    || die "TRICKLE must be a positive number of seconds, got '$TRICKLE'"
[[ $START_DELAY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "START_DELAY must be a number of seconds, got '$START_DELAY'"
if [[ $HEADER_TIMEOUT =~ ^([0-9]+)s$ ]]; then
    HT_S=${BASH_REMATCH[1]}
elif [[ $HEADER_TIMEOUT =~ ^([0-9]+)ms$ ]]; then
    HT_S=$(calc "printf \"%.3f\", ${BASH_REMATCH[1]} / 1000")
else
    die "HEADER_TIMEOUT must look like 5s or 500ms, got '$HEADER_TIMEOUT'"
fi
calc "exit !($HT_S >= 0.1)" || die "HEADER_TIMEOUT must be at least 100ms (the gateway's minimum), got '$HEADER_TIMEOUT'"
ATTACK_BOUND=${ATTACK_BOUND:-$(calc "printf \"%d\", int($HT_S + 0.999) + 10")}
require_positive ATTACK_BOUND
calc "exit !($ATTACK_BOUND > $HT_S + $CLOSE_SLACK)" \
    || die "ATTACK_BOUND ($ATTACK_BOUND s) must exceed HEADER_TIMEOUT + $CLOSE_SLACK s"
(( WRK_THREADS <= CONNECTIONS )) || WRK_THREADS=$CONNECTIONS
require_tools wrk curl python3 timeout "$NGINX"

setup_tmp gateway-slowloris "configs, logs, raw wrk outputs, slow-connection records, samples"

# ---------------------------------------------------------------- set-up
echo "== slowloris test: HEADER_TIMEOUT=$HEADER_TIMEOUT SLOW=$SLOW TRICKLE=${TRICKLE}s ATTACK_BOUND=${ATTACK_BOUND}s CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS DURATION=${DURATION}s START_DELAY=${START_DELAY}s THREADS=$THREADS CONTROL=$CONTROL"
echo "== temp dir: $TMP"
show_load start
TOP_START=$(show_top)
[[ -z $TOP_START ]] || echo "$TOP_START"
LOAD_START=$(load_avg)

prepare_gateway

# ---------------------------------------------------------------- the helper
HELPER=$TMP/slowloris.py
cat >"$HELPER" <<'PY'
#!/usr/bin/env python3
"""slowloris.sh's helper (python3 stdlib only). Two modes:

attack HOST PORT N TRICKLE_S BOUND_S OPEN_BOUND_S READY_FILE CONNS_TSV
    Opens N connections one after the other (giving up on the rest after OPEN_BOUND_S),
    sends b"GET / HTTP/1.1\\r\\nHost: x\\r\\n" on each, writes READY_FILE, then sends one
    more header byte ("X-Slowloris: aaa...", never a line end) every TRICKLE_S on every
    connection still open. Records when the server closed each one (EOF, or a reset on a
    read or a write), in seconds after its connect, and the status line it answered.
    Stops BOUND_S after READY_FILE, closing what is still open. Prints key=value lines;
    CONNS_TSV gets one line per connection.

sample ADMIN_PORT|- PORT INTERVAL_S MAX_S OUT
    Every INTERVAL_S for at most MAX_S (or until SIGTERM): wall time,
    gateway_downstream_connections from http://127.0.0.1:ADMIN_PORT/metrics (NA with
    "-" or on error), and the ESTABLISHED TCP connections whose local port is PORT (from
    /proc/net/tcp, the server's side, each counted once). One line each, flushed.
"""
import os
import resource
import selectors
import socket
import statistics
import sys
import time
import urllib.request

PREFIX = b"GET / HTTP/1.1\r\nHost: x\r\n"
TRICKLE_NAME = b"X-Slowloris: "
KEEP_RESPONSE = 512  # bytes of each answer kept


def trickle_byte(i):
    return TRICKLE_NAME[i:i + 1] if i < len(TRICKLE_NAME) else b"a"


class Conn:
    __slots__ = ("idx", "sock", "t0", "wall0", "sent", "resp", "closed_s", "how")

    def __init__(self, idx, sock, t0, wall0):
        self.idx, self.sock, self.t0, self.wall0 = idx, sock, t0, wall0
        self.sent = 0
        self.resp = bytearray()
        self.closed_s = None
        self.how = "open"

    def status(self):
        line = bytes(self.resp).split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            return parts[1].decode()
        return "-" if not self.resp else "garbage"


def attack(host, port, n, trickle, bound, open_bound, ready_file, tsv):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    sel = selectors.DefaultSelector()
    conns, errors = [], {}
    mono = time.monotonic
    start_wall, start = time.time(), mono()
    for i in range(n):
        if mono() - start > open_bound:
            errors["open_bound_passed"] = errors.get("open_bound_passed", 0) + n - i
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((host, port))
            t0, wall0 = mono(), time.time()
            s.sendall(PREFIX)
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            s.close()
            continue
        s.setblocking(False)
        c = Conn(i, s, t0, wall0)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    opened, opened_wall = mono(), time.time()
    with open(ready_file + ".tmp", "w") as f:
        f.write(f"opened={len(conns)}\nopened_wall={opened_wall:.6f}\n")
    os.rename(ready_file + ".tmp", ready_file)

    live = len(conns)

    def read_into(c):
        """Reads what is there; True when the server closed (EOF or reset)."""
        for _ in range(16):
            try:
                data = c.sock.recv(4096)
            except BlockingIOError:
                return False
            except OSError:
                c.how = "reset"
                return True
            if not data:
                c.how = "eof"
                return True
            if len(c.resp) < KEEP_RESPONSE:
                c.resp += data[:KEEP_RESPONSE - len(c.resp)]
        return False

    def close(c):
        nonlocal live
        c.closed_s = mono() - c.t0
        sel.unregister(c.sock)
        c.sock.close()
        live -= 1

    end = opened + bound
    next_tick = opened + trickle
    while live > 0:
        now = mono()
        if now >= end:
            break
        for key, _ in sel.select(max(0.0, min(next_tick, end) - now)):
            if read_into(key.data):
                close(key.data)
        now = mono()
        if now >= next_tick:
            for c in conns:
                if c.closed_s is not None:
                    continue
                try:
                    c.sock.send(trickle_byte(c.sent))
                    c.sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    # The server is gone: keep whatever it answered first.
                    read_into(c)
                    c.how = "reset"
                    close(c)
            while next_tick <= now:
                next_tick += trickle
    end_wall = time.time()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    still_open = 0
    for c in conns:
        if c.closed_s is None:
            still_open += 1
            sel.unregister(c.sock)
            c.sock.close()

    closed = [c for c in conns if c.closed_s is not None]
    times = sorted(c.closed_s for c in closed)
    statuses = {}
    for c in closed:
        statuses[c.status()] = statuses.get(c.status(), 0) + 1
    with open(tsv, "w") as f:
        f.write("idx\tconnect_wall\tclosed_after_s\thow\tstatus\theader_bytes_sent\n")
        for c in conns:
            f.write(f"{c.idx}\t{c.wall0:.6f}\t{'NA' if c.closed_s is None else f'{c.closed_s:.4f}'}\t{c.how}\t{c.status()}\t{len(PREFIX) + c.sent}\n")

    def fmt(v):
        return "NA" if v is None else f"{v:.3f}"

    close_walls = [c.wall0 + c.closed_s for c in closed]
    out = {
        "asked": n,
        "opened": len(conns),
        "connect_failed": sum(errors.values()),
        "connect_errors": ",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-",
        "open_s": f"{opened - start:.3f}",
        "closed_by_server": len(closed),
        "eof": sum(1 for c in closed if c.how == "eof"),
        "reset": sum(1 for c in closed if c.how == "reset"),
        "got_408": statuses.get("408", 0),
        "statuses": ",".join(f"{k}:{v}" for k, v in sorted(statuses.items())) or "-",
        "still_open_at_bound": still_open,
        "close_min_s": fmt(times[0] if times else None),
        "close_median_s": fmt(statistics.median(times) if times else None),
        "close_p90_s": fmt(times[min(len(times) - 1, int(0.9 * len(times)))] if times else None),
        "close_max_s": fmt(times[-1] if times else None),
        "max_header_bytes_sent": max((len(PREFIX) + c.sent for c in conns), default=0),
        "start_wall": f"{start_wall:.6f}",
        "opened_wall": f"{opened_wall:.6f}",
        "first_close_wall": fmt(min(close_walls) if close_walls else None),
        "last_close_wall": fmt(max(close_walls) if close_walls else None),
        "end_wall": f"{end_wall:.6f}",
        "cpu_s": f"{ru.ru_utime + ru.ru_stime:.2f}",
    }
    for k, v in out.items():
        print(f"{k}={v}")


def established(port):
    # /proc/net/tcp comes in several reads, each resuming at an offset in a table that
    # may have changed meanwhile (the sampler's own /metrics connections): a socket can
    # be listed twice. Count distinct (local, remote) address pairs.
    seen = set()
    with open("/proc/net/tcp", "rb", buffering=0) as f:
        data = f.read()  # readall: read() until EOF
    for line in data.decode().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            seen.add((fields[1], fields[2]))
    return len(seen)


def gauge(admin):
    if admin == "-":
        return "NA"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("gateway_downstream_connections "):
                    return str(int(float(line.split()[1])))
    except OSError:
        pass
    return "NA"


def sample(admin, port, interval, max_s, out):
    end = time.monotonic() + max_s
    with open(out, "w") as f:
        while time.monotonic() < end:
            t = time.monotonic()
            f.write(f"{time.time():.3f} {gauge(admin)} {established(port)}\n")
            f.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - t)))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "attack":
        host, port, n, trickle, bound, open_bound, ready, tsv = args
        attack(host, int(port), int(n), float(trickle), float(bound), float(open_bound), ready, tsv)
    elif mode == "sample":
        admin, port, interval, max_s, out = args
        sample(admin, int(port), float(interval), float(max_s), out)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
PY

# ---------------------------------------------------------------- servers
# Four distinct free loopback ports: upstream, gateway, its admin, nginx proxy.
free_ports 4
read -r P_UPSTREAM P_GW P_ADMIN P_NGINX <<<"${PORTS[*]}"

start_nginx nginx-upstream "$P_UPSTREAM" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"
echo "== nginx-upstream: pid $NGINX_PID on 127.0.0.1:$P_UPSTREAM"

# The gateway: run.sh's template (access log off) with client_header_timeout added to
# its server section.
GW_TMPL=$TMP/gateway-slowloris.yaml.tmpl
sed 's/^server:$/&\n  client_header_timeout: @HEADER_TIMEOUT@/' "$SCRIPT_DIR/gateway.yaml.tmpl" >"$GW_TMPL"
render "$GW_TMPL" "$TMP/gateway.yaml" DIR="$TMP" NAME=gateway PORT="$P_GW" ADMIN_PORT="$P_ADMIN" \
    THREADS="$THREADS" UPSTREAM_PORT="$P_UPSTREAM" HEADER_TIMEOUT="$HEADER_TIMEOUT" \
    ACCESS_LOG_ENABLED=false ACCESS_LOG_FILE="$TMP/gateway-access.log"
[[ $(grep -c "^  client_header_timeout: $HEADER_TIMEOUT\$" "$TMP/gateway.yaml") == 1 ]] \
    || die "gateway: client_header_timeout not set in $TMP/gateway.yaml"
gateway_check_config gateway "$TMP/gateway.yaml"
gateway_launch gateway "$P_ADMIN"
wait_ready gateway "$GW_PID" "http://127.0.0.1:$P_GW/" ok "$TMP/gateway.log"
echo "== gateway: pid $GW_PID on 127.0.0.1:$P_GW (admin 127.0.0.1:$P_ADMIN), client_header_timeout $HEADER_TIMEOUT"
GATEWAY_PID=$GW_PID
METRICS=$(metrics_at "$P_ADMIN") || die "gateway: cannot read /metrics"
for m in gateway_downstream_connections gateway_downstream_refused_total 'gateway_downstream_closed_total{reason="header_timeout"}'; do
    grep -qF "$m " <<<"$METRICS" || die "gateway: no '$m' in /metrics (a build without the connection loop?)"
done

if [[ $CONTROL == 1 ]]; then
    # nginx: run.sh's reverse-proxy config with client_header_timeout added to its http
    # block (after the http-level keepalive_timeout, the one indented by four spaces).
    NGINX_TMPL=$TMP/nginx-proxy-slowloris.conf.tmpl
    sed 's/^    keepalive_timeout 120s;$/&\n    client_header_timeout @HEADER_TIMEOUT@;/' \
        "$SCRIPT_DIR/nginx-proxy.conf.tmpl" >"$NGINX_TMPL"
    start_nginx nginx-proxy "$P_NGINX" "$NGINX_TMPL" UPSTREAM_PORT="$P_UPSTREAM" HEADER_TIMEOUT="$HEADER_TIMEOUT"
    [[ $(grep -c "client_header_timeout $HEADER_TIMEOUT;" "$TMP/nginx-proxy.conf") == 1 ]] \
        || die "nginx-proxy: client_header_timeout not set in $TMP/nginx-proxy.conf"
    echo "== nginx-proxy: pid $NGINX_PID on 127.0.0.1:$P_NGINX, client_header_timeout $HEADER_TIMEOUT"
    NGINX_PROXY_PID=$NGINX_PID
fi

# ---------------------------------------------------------------- measurement
summary_init
fmt_ms() { [[ $1 == NA ]] && echo NA || calc "printf \"%.3f\", $1"; }
fmt_rps() { [[ $1 == NA ]] && echo NA || calc "printf \"%.0f\", $1"; }
kvget() { # key file -> value ("NA" when missing)
    local v
    v=$(sed -n "s/^$1=//p" "$2" | head -n 1)
    echo "${v:-NA}"
}
ratio() { # a b -> a / b with 2 decimals, NA when either is missing or b is 0
    if [[ $1 == NA || $2 == NA ]]; then echo NA; else calc "if ($2 > 0) printf \"%.2f\", $1 / $2; else print \"NA\""; fi
}
run_wrk() { # url outfile: the measured wrk; its exit status
    wrk_bg "$DURATION" "$2" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency "$1"
    wait_bg "$WRK_PID"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_s() { # pid...: their user + system CPU seconds so far (with their children: nginx workers)
    local p pids=() t=0 f
    for p in "$@"; do pids+=("$p"); while read -r f; do pids+=("$f"); done < <(ps -o pid= --ppid "$p" 2>/dev/null || true); done
    for p in "${pids[@]}"; do
        # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || f=0
        t=$(( t + ${f:-0} ))
    done
    calc "printf \"%.2f\", $t / $CLK_TCK"
}
gw_metric() { # metrics-text name [label-regex]
    metric_sum "$1" "$2" "${3:-}"
}

# Baseline wrk, then the attack with the same wrk during it, on one target.
run_target() { # name port admin-port|- server-pid
    local name=$1 port=$2 admin=$3 spid=$4 url="http://127.0.0.1:$2/" out rc ready attack_out tsv samples
    local sampler attacker deadline wrk_start wrk_end m0="" m1="" base during c0 c1 cpu_base cpu_attack
    # The sampler runs through both phases, so that its own cost is in both.
    samples=$TMP/$name-samples.txt
    python3 "$HELPER" sample "$admin" "$port" "$SAMPLE_INTERVAL" \
        "$(( DURATION * 2 + OPEN_BOUND + ATTACK_BOUND + 30 ))" "$samples" >"$TMP/$name-sampler.out" 2>&1 &
    sampler=$!
    bg_started "$sampler"
    echo "== $name: baseline: wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency $url"
    out=$TMP/$name-wrk-baseline.txt
    rc=0
    c0=$(cpu_s "$spid")
    run_wrk "$url" "$out" || rc=$?
    c1=$(cpu_s "$spid")
    cpu_base=$(calc "printf \"%.2f\", $c1 - $c0")
    (( rc == 0 )) || echo "   wrk exited $rc (output in $out)" >&2
    base=$(parse_wrk "$out")
    read -r rps p50 p99 non2xx sockerr reqs <<<"$base"
    printf '   baseline %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx %s  socket errors %s\n' \
        "$(fmt_rps "$rps")" "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$non2xx" "$sockerr"

    sleep 1 # wrk's connections are gone; a few samples before the attack
    [[ $admin == - ]] || m0=$(metrics_at "$admin" 2>/dev/null || true)

    echo "== $name: attack: $SLOW slow connections (one header byte every ${TRICKLE}s, bound ${ATTACK_BOUND}s), the same wrk ${START_DELAY}s after they are open"
    ready=$TMP/$name-attack.ready
    attack_out=$TMP/$name-attack.txt
    tsv=$TMP/$name-slow-connections.tsv
    timeout -k 5 $(( OPEN_BOUND + ATTACK_BOUND + 30 )) python3 "$HELPER" attack 127.0.0.1 "$port" \
        "$SLOW" "$TRICKLE" "$ATTACK_BOUND" "$OPEN_BOUND" "$ready" "$tsv" >"$attack_out" 2>&1 &
    attacker=$!
    bg_started "$attacker"
    deadline=$(( SECONDS + OPEN_BOUND + 5 ))
    until [[ -f $ready ]]; do
        alive "$attacker" || die "$name: the slowloris helper exited before opening its connections: $(cat "$attack_out")"
        (( SECONDS < deadline )) || die "$name: the slowloris helper did not open its connections within $(( OPEN_BOUND + 5 ))s"
        sleep 0.05
    done
    echo "   $(kvget opened "$ready") of $SLOW slow connections open"
    sleep "$START_DELAY"
    out=$TMP/$name-wrk-attack.txt
    wrk_start=$(now_s)
    rc=0
    c0=$(cpu_s "$spid")
    run_wrk "$url" "$out" || rc=$?
    c1=$(cpu_s "$spid")
    wrk_end=$(now_s)
    cpu_attack=$(calc "printf \"%.2f\", $c1 - $c0")
    (( rc == 0 )) || echo "   wrk exited $rc (output in $out)" >&2
    during=$(parse_wrk "$out")
    read -r rps p50 p99 non2xx sockerr reqs <<<"$during"
    printf '   attack   %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx %s  socket errors %s\n' \
        "$(fmt_rps "$rps")" "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$non2xx" "$sockerr"
    rc=0
    wait_bg "$attacker" || rc=$?
    (( rc == 0 )) || echo "   the slowloris helper exited $rc: $(cat "$attack_out")" >&2
    sleep 1 # let the last closes and wrk's connections reach the gauge
    kill -TERM "$sampler" 2>/dev/null || true
    wait_bg "$sampler" || true
    [[ $admin == - ]] || m1=$(metrics_at "$admin" 2>/dev/null || true)

    # ------------------------------------------------ report for this target
    local a_start a_opened opened closed eof reset got408 statuses still cmin cmed cp90 cmax failed
    local first_close last_close w0 w1 sent
    a_start=$(kvget start_wall "$attack_out")
    a_opened=$(kvget opened_wall "$attack_out")
    opened=$(kvget opened "$attack_out")
    failed=$(kvget connect_failed "$attack_out")
    closed=$(kvget closed_by_server "$attack_out")
    eof=$(kvget eof "$attack_out")
    reset=$(kvget reset "$attack_out")
    got408=$(kvget got_408 "$attack_out")
    statuses=$(kvget statuses "$attack_out")
    still=$(kvget still_open_at_bound "$attack_out")
    cmin=$(kvget close_min_s "$attack_out")
    cmed=$(kvget close_median_s "$attack_out")
    cp90=$(kvget close_p90_s "$attack_out")
    cmax=$(kvget close_max_s "$attack_out")
    first_close=$(kvget first_close_wall "$attack_out")
    last_close=$(kvget last_close_wall "$attack_out")
    sent=$(kvget max_header_bytes_sent "$attack_out")
    [[ $a_start != NA ]] || { echo "   the slowloris helper printed no results: $(cat "$attack_out")" >&2; a_start=$(kvget opened_wall "$ready"); a_opened=$a_start; }
    w0=$(calc "printf \"%.1f\", $wrk_start - $a_start")
    w1=$(calc "printf \"%.1f\", $wrk_end - $a_start")
    # How long wrk ran while all / some slow connections were open (until the first /
    # the last server close; to the helper's end for those it had to close itself).
    wrk_overlap() { # until-wall
        calc "o = ($1 < $wrk_end ? $1 : $wrk_end) - $wrk_start; printf \"%.1f\", (o > 0 ? o : 0)"
    }
    local all_until some_until ov_all ov_some
    all_until=$first_close some_until=$last_close
    if [[ $still != 0 && $still != NA ]]; then some_until=$(kvget end_wall "$attack_out"); fi
    [[ $all_until != NA ]] || all_until=$(kvget end_wall "$attack_out")
    ov_all=NA ov_some=NA
    [[ $all_until == NA ]] || ov_all=$(wrk_overlap "$all_until")
    [[ $some_until == NA ]] || ov_some=$(wrk_overlap "$some_until")
    # Samples: relative to the attack's start; before = the last before it; peak = the
    # highest from it on; after = the last one (1 s after the helper and wrk ended).
    local g_before g_peak g_peak_t g_after e_before e_peak e_peak_t e_after timeline
    read -r g_before g_peak g_peak_t g_after e_before e_peak e_peak_t e_after < <(awk -v t0="$a_start" '
        function num(v) { return v == "NA" ? -1 : v + 0 }
        $1 < t0 { gb = $2; eb = $3; next }
        { if (gp == "" || num($2) > num(gp)) { gp = $2; gt = $1 - t0 }
          if (ep == "" || $3 + 0 > ep + 0) { ep = $3; et = $1 - t0 }
          ga = $2; ea = $3 }
        END { printf "%s %s %.1f %s %s %s %.1f %s\n", (gb == "" ? "NA" : gb), (gp == "" ? "NA" : gp), gt,
                (ga == "" ? "NA" : ga), (eb == "" ? "NA" : eb), (ep == "" ? "NA" : ep), et, (ea == "" ? "NA" : ea) }' "$samples")
    # Per second since the attack's start: the highest count of that second.
    timeline=$(awk -v t0="$a_start" -v col="$([[ $admin == - ]] && echo 3 || echo 2)" '
        $1 >= t0 { s = int($1 - t0); if (!(s in m) || $col + 0 > m[s] + 0) m[s] = $col; if (s > last) last = s }
        END { for (s = 0; s <= last; s++) printf "%s%ds:%s", (s ? " " : ""), s, (s in m ? m[s] : "-"); print "" }' "$samples")

    local b_rps b_p50 b_p99 b_non2xx b_sockerr b_reqs d_rps d_p50 d_p99 d_non2xx d_sockerr d_reqs
    read -r b_rps b_p50 b_p99 b_non2xx b_sockerr b_reqs <<<"$base"
    read -r d_rps d_p50 d_p99 d_non2xx d_sockerr d_reqs <<<"$during"
    local what="$name"
    [[ $name == gateway ]] && what="gateway (server.client_header_timeout $HEADER_TIMEOUT)"
    [[ $name == nginx ]] && what="nginx control (reverse proxy, 2 workers, client_header_timeout $HEADER_TIMEOUT)"
    sum "## $what: $SLOW slow connections, one header byte every ${TRICKLE}s; wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency"
    sum "   phase         req/s     p50 ms     p99 ms   non-2xx  socket-err  requests"
    sum "$(printf '   %-9s %9s %10s %10s %9s %11s %9s' baseline "$(fmt_rps "$b_rps")" "$(fmt_ms "$b_p50")" "$(fmt_ms "$b_p99")" "$b_non2xx" "$b_sockerr" "$b_reqs")"
    sum "$(printf '   %-9s %9s %10s %10s %9s %11s %9s' attack "$(fmt_rps "$d_rps")" "$(fmt_ms "$d_p50")" "$(fmt_ms "$d_p99")" "$d_non2xx" "$d_sockerr" "$d_reqs")"
    sum "   attack / baseline: req/s $(ratio "$d_rps" "$b_rps"), p50 $(ratio "$d_p50" "$b_p50"), p99 $(ratio "$d_p99" "$b_p99")"
    sum "   CPU of $name during each wrk run (user + system, workers included): baseline $cpu_base s, attack $cpu_attack s ($(calc "printf \"%.1f\", $cpu_base * 1e6 / ${b_reqs/NA/0}" 2>/dev/null || echo NA) vs $(calc "printf \"%.1f\", $cpu_attack * 1e6 / ${d_reqs/NA/0}" 2>/dev/null || echo NA) us/request); the slowloris helper used $(kvget cpu_s "$attack_out") s over the attack (on the same cores)"
    sum "   timing (s after the first slow connect): all $opened open at $(calc "printf \"%.2f\", $a_opened - $a_start"), wrk ran $w0 - $w1, server closes $( [[ $first_close == NA ]] && echo none || echo "$(calc "printf \"%.2f\", $first_close - $a_start") - $(calc "printf \"%.2f\", $last_close - $a_start")"); of wrk's ${DURATION}s, $ov_all s with all of them open, $ov_some s with some"
    sum "   slow connections: opened $opened of $SLOW (connect failures $failed: $(kvget connect_errors "$attack_out")), closed by the server $closed (EOF $eof, reset $reset), answers by status: $statuses, 408s $got408, still open at the ${ATTACK_BOUND}s bound $still; at most $sent header bytes sent on one"
    sum "   close time after connect: min $cmin s, median $cmed s, p90 $cp90 s, max $cmax s  (configured deadline $HEADER_TIMEOUT = ${HT_S} s)"
    if [[ $admin != - ]]; then
        local ht0 ht1 rf0 rf1 s408_0 s408_1 d_ht d_rf d_408
        ht0=$(gw_metric "$m0" gateway_downstream_closed_total 'reason="header_timeout"')
        ht1=$(gw_metric "$m1" gateway_downstream_closed_total 'reason="header_timeout"')
        rf0=$(gw_metric "$m0" gateway_downstream_refused_total)
        rf1=$(gw_metric "$m1" gateway_downstream_refused_total)
        s408_0=$(gw_metric "$m0" gateway_requests_total 'status="408"')
        s408_1=$(gw_metric "$m1" gateway_requests_total 'status="408"')
        d_ht=NA d_rf=NA d_408=NA
        [[ $ht0 == NA || $ht1 == NA ]] || d_ht=$(( ht1 - ht0 ))
        [[ $rf0 == NA || $rf1 == NA ]] || d_rf=$(( rf1 - rf0 ))
        [[ $s408_0 == NA || $s408_1 == NA ]] || d_408=$(( s408_1 - s408_0 ))
        sum "   gateway_downstream_connections: before $g_before, peak $g_peak (${g_peak_t} s), after $g_after; over the attack: gateway_downstream_closed_total{reason=\"header_timeout\"} +$d_ht, gateway_downstream_refused_total +$d_rf, gateway_requests_total{status=\"408\"} +$d_408"
        sum "   gateway_downstream_connections per second since the first slow connect (highest sample): $timeline"
        sum "   established TCP connections on its port (/proc/net/tcp): before $e_before, peak $e_peak (${e_peak_t} s), after $e_after"
        # Targets.
        local ok V_OPEN V_CLOSED V_408 V_TIME V_METRIC V_AFTER V_WRK
        ok=0; [[ $opened == "$SLOW" ]] && ok=1
        verdict "$ok" slow-opened; V_OPEN=$V
        ok=0; [[ $closed != NA && $closed == "$opened" && $still == 0 ]] && ok=1
        verdict "$ok" slow-all-closed; V_CLOSED=$V
        ok=0; [[ $got408 != NA && $got408 == "$opened" ]] && ok=1
        verdict "$ok" slow-all-408; V_408=$V
        ok=0; [[ $cmin != NA && $cmax != NA ]] && ok=$(calc "print ($cmin >= $HT_S - $EARLY_SLACK && $cmax <= $HT_S + $CLOSE_SLACK) ? 1 : 0")
        verdict "$ok" close-at-deadline; V_TIME=$V
        ok=0; [[ $d_ht == "$opened" && $d_rf == 0 ]] && ok=1
        verdict "$ok" metrics-count; V_METRIC=$V
        ok=0; [[ $g_after != NA && $g_after == "$g_before" ]] && ok=1
        verdict "$ok" gauge-back; V_AFTER=$V
        ok=0; [[ $d_non2xx == 0 && $d_sockerr == 0 && $d_rps != NA ]] && ok=1
        verdict "$ok" normal-requests-ok; V_WRK=$V
        sum "   targets: all $SLOW opened: $V_OPEN; all closed by the server: $V_CLOSED; all answered 408: $V_408; closed within [deadline - $EARLY_SLACK s, deadline + $CLOSE_SLACK s]: $V_TIME; header_timeout closes = opened and 0 refused: $V_METRIC; gauge back to before: $V_AFTER; wrk during the attack without errors: $V_WRK"
    else
        sum "   established TCP connections on its port (/proc/net/tcp): before $e_before, peak $e_peak (${e_peak_t} s), after $e_after"
        sum "   established TCP connections per second since the first slow connect (highest sample): $timeline"
    fi
}

run_target gateway "$P_GW" "$P_ADMIN" "$GATEWAY_PID"
if [[ $CONTROL == 1 ]]; then
    run_target nginx "$P_NGINX" - "$NGINX_PROXY_PID"
else
    sum "## nginx control skipped (CONTROL=0)"
fi

# A server that died during the run invalidates its numbers.
find_died
(( ${#DIED[@]} == 0 )) || sum "## WARNING: died during the run: ${DIED[*]}"
log_summary gateway "$TMP/gateway.log" 5 1
show_load end
TOP_END=$(show_top)
[[ -z $TOP_END ]] || echo "$TOP_END"
# Another busy process on these two cores makes the req/s and latency comparisons noise.
sum "## machine: $(nproc) cpus, load average at start $LOAD_START, at end $(load_avg); processes using >= 5 % of a CPU at start: $( [[ -z $TOP_START ]] && echo none || echo "$TOP_START" | sed 's/^ *//' | paste -sd ';' | sed 's/;/; /g'), at end: $( [[ -z $TOP_END ]] && echo none || echo "$TOP_END" | sed 's/^ *//' | paste -sd ';' | sed 's/;/; /g')"

sum_verdict

results_begin slowloris-
{
    results_header "gateway slowloris test" \
        "header_timeout=$HEADER_TIMEOUT slow=$SLOW trickle_s=$TRICKLE attack_bound_s=$ATTACK_BOUND connections=$CONNECTIONS wrk_threads=$WRK_THREADS duration_s=$DURATION start_delay_s=$START_DELAY gateway_threads=$THREADS control=$CONTROL" \
        "cpus=$(nproc) nginx=$(nginx_version) wrk=$(wrk_version) python=$(python3 -c 'import platform; print(platform.python_version())')"
    echo "tmp_dir=$TMP"
    cat "$SUMMARY"
} >"$RESULT"
echo
echo "== summary written to $RESULT"
