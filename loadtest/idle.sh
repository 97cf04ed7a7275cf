#!/usr/bin/env bash
# Idle keep-alive clients: the memory each costs the gateway and nginx. One nginx
# upstream; for each target, N client connections each send one request, read the
# answer and then stay open, idle; the target's resident memory (VmRSS; nginx's master
# and workers summed) is read before they connect and once they are all idle. The
# difference divided by N is the memory per idle keep-alive connection. Loopback only.
#
#   loadtest/idle.sh                       # 10,000 connections, gateway then nginx
#   CONNECTIONS=2000 loadtest/idle.sh
#
# Knobs: CONNECTIONS=10000  SETTLE=2 (seconds idle before the reading)  THREADS=2
#        GATEWAY_BIN=...  (else cargo build --release)
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh"

CONNECTIONS=${CONNECTIONS:-10000}
SETTLE=${SETTLE:-2}
THREADS=${THREADS:-2}
require_positive CONNECTIONS THREADS
is_uint "$SETTLE" || die "SETTLE must be a whole number of seconds, got '$SETTLE'"
require_tools curl python3 "$NGINX"

# Every connection is a descriptor in the client and in the target.
want_fds=$(( CONNECTIONS + 1000 ))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= want_fds )) || die "need $want_fds open files, ulimit -n is $(ulimit -n)"

setup_tmp gateway-idle "configs, logs"
prepare_gateway
free_ports 4
read -r P_UP P_GW P_ADMIN P_NGINX <<<"${PORTS[*]}"
start_nginx nginx-upstream "$P_UP" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"

cat >"$TMP/gateway.yaml" <<Y
listen: {proxy: 127.0.0.1:$P_GW, admin: 127.0.0.1:$P_ADMIN}
server: {threads: $THREADS, max_connections: $(( CONNECTIONS + 100 )), keepalive_timeout: 5m, pid_file: $TMP/gw.pid, upgrade_sock: $TMP/up.sock}
upstreams: {app: {backends: [{addr: 127.0.0.1:$P_UP}]}}
routes: [{path_prefix: /, upstream: app}]
access_log: {enabled: false}
Y
gateway_check_config gateway "$TMP/gateway.yaml"

# nginx as the reverse proxy, sized for the connections (run.sh's template allows 8192
# per worker): two workers, the same keep-alive to the upstream.
cat >"$TMP/nginx-idle.conf.tmpl" <<'N'
@USER_DIRECTIVE@
worker_processes 2;
daemon off;
pid @DIR@/@NAME@.pid;
error_log @DIR@/@NAME@-error.log warn;
worker_rlimit_nofile @FDS@;
events { worker_connections @FDS@; }
http {
    access_log off;
    client_body_temp_path @DIR@/@NAME@-tmp/body;
    proxy_temp_path       @DIR@/@NAME@-tmp/proxy;
    fastcgi_temp_path     @DIR@/@NAME@-tmp/fastcgi;
    uwsgi_temp_path       @DIR@/@NAME@-tmp/uwsgi;
    scgi_temp_path        @DIR@/@NAME@-tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 5m;
    upstream backend { server 127.0.0.1:@UPSTREAM_PORT@; keepalive 64; }
    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
N

rss_kib() { # pid...: VmRSS summed, with each one's children (nginx's workers)
    local total=0 p c kb
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" || true); do
            kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
            total=$(( total + ${kb:-0} ))
        done
    done
    echo "$total"
}

# The client: opens N connections, one request on each (its answer read whole), then
# says "idle N" and holds them until its stdin closes.
CLIENT=$TMP/idle_client.py
cat >"$CLIENT" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"
socks, failed = [], 0
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
        while len(body) < length:
            body += s.recv(4096)
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        socks.append(s)
    except Exception as e:
        failed += 1
        if failed <= 3:
            print("connection failed: %s" % e, file=sys.stderr)
print("idle %d failed %d" % (len(socks), failed), flush=True)
sys.stdin.read()
PY

measure() { # name port pid...
    local name=$1 port=$2 before after line open failed
    shift 2
    curl -s -o /dev/null "http://127.0.0.1:$port/" # warm: the upstream connection exists
    sleep 1
    before=$(rss_kib "$@")
    coproc CLIENTP { python3 "$CLIENT" "$port" "$CONNECTIONS"; }
    read -r line <&"${CLIENTP[0]}" || die "$name: the client ended early"
    read -r _ open _ failed <<<"$line"
    sleep "$SETTLE"
    after=$(rss_kib "$@")
    exec {CLIENTP[1]}>&-
    wait "$CLIENTP_PID" || true
    printf '%-10s %7d %7d %12.1f %12.1f %14.2f\n' "$name" "$open" "$failed" \
        "$(calc "print $before / 1024")" "$(calc "print $after / 1024")" \
        "$(calc "print ($after - $before) / ($open > 0 ? $open : 1)")"
    RESULT[$name]=$(calc "print ($after - $before) / ($open > 0 ? $open : 1)")
}

declare -A RESULT=()
report load start
echo "== $CONNECTIONS idle keep-alive client connections per target (one request each), ${SETTLE}s idle"
printf '%-10s %7s %7s %12s %12s %14s\n' target open failed "RSS MiB 0" "RSS MiB N" "KiB per conn"
gateway_launch gateway "$P_ADMIN"
measure gateway "$P_GW" "$GW_PID"
stop_named gateway
start_nginx nginx "$P_NGINX" "$TMP/nginx-idle.conf.tmpl" UPSTREAM_PORT="$P_UP" FDS=$(( CONNECTIONS + 2000 ))
measure nginx "$P_NGINX" "$NGINX_PID"
echo "== gateway / nginx, memory per idle connection: $(calc "printf \"%.2f\", ${RESULT[gateway]} / ${RESULT[nginx]}")"
report load end
