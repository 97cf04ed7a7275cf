#!/usr/bin/env bash
# Instructions and allocations per proxied request, counted by valgrind's callgrind: a
# noise-free A/B for a shared machine (the same binary and request give the same count
# within a fraction of a percent, where CPU time moves by ±10%). User-space work only:
# system calls, cache misses and waiting are not in it, so confirm a win with ab.sh.
#
#   loadtest/callgrind.sh                          # target/release/gateway: gateway, bare
#   BINS="old/gateway new/gateway" loadtest/callgrind.sh
#   MODES="gateway gateway-log bare" N=5000 loadtest/callgrind.sh
#
# MODES: gateway      one route, one backend, request ids, traceparent, metrics; no access log
#        gateway-log  the same with the access log on (to a file)
#        bare         --bare (Pingora's pass-through, no features)
# For each binary and mode: start it under callgrind, warm up with 300 requests, zero the
# counters, send N requests (oha, 4 connections, keep-alive), dump, and print Ir/request,
# allocations/request (calls into the allocator) and the request path's costliest own
# functions (inclusive). Needs valgrind and oha. Slow: ~50x, about 20 s per mode.
set -euo pipefail
# shellcheck source=loadtest/lib.sh
. "$(dirname "$0")/lib.sh"

BINS=${BINS:-$ROOT/target/release/gateway}
MODES=${MODES:-gateway bare}
N=${N:-2000}
TOP=${TOP:-12}
OHA=${OHA:-oha}
require_positive N
require_tools valgrind callgrind_control callgrind_annotate "$OHA" python3 "$NGINX"
read -r -a BIN_LIST <<<"$BINS"
for bin in "${BIN_LIST[@]}"; do [[ -x $bin ]] || die "not an executable: $bin"; done

setup_tmp gateway-callgrind "configs, logs, callgrind outputs"
free_ports 3
read -r P_UP P_GW P_ADMIN <<<"${PORTS[*]}"
start_nginx nginx-upstream "$P_UP" "$SCRIPT_DIR/nginx-upstream.conf.tmpl"

config() { # access-log-enabled
    cat <<Y
listen: {proxy: 127.0.0.1:$P_GW, admin: 127.0.0.1:$P_ADMIN}
server: {threads: 2, grace_period: 0s, graceful_shutdown_timeout: 1s, pid_file: $TMP/gw.pid, upgrade_sock: $TMP/up.sock}
upstreams: {app: {backends: [{addr: 127.0.0.1:$P_UP}]}}
routes: [{path_prefix: /, upstream: app}]
access_log: {enabled: $1, destination: $TMP/access.log}
Y
}

# Ir and allocator calls in one callgrind output; the top own functions by inclusive Ir.
summarize() { # callgrind-out n
    python3 - "$1" "$2" "$TOP" <<'PY'
import re, subprocess, sys
path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, total, allocs, cfn = {}, 0, 0, None
ALLOC = re.compile(r"^(mi_malloc_aligned|mi_zalloc_aligned|mi_realloc_aligned|malloc|calloc|realloc|__rust_alloc|__rust_alloc_zeroed|__rust_realloc)$")
for line in open(path, errors="replace"):
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
    elif line.startswith("fn=") or line.startswith("cfn="):
        # Functions and callees share one numbering; a name is spelt out once, where first seen.
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            cfn = names.get(m.group(1), "") if line.startswith("cfn=") else None
    elif line.startswith("calls=") and cfn is not None:
        if ALLOC.match(cfn.split(" [")[0].split(":")[-1]):
            allocs += int(line[6:].split()[0])
        cfn = None
print("   Ir/request %d   allocations/request %.1f" % (total // n, allocs / n))
out = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=yes", "--threshold=100", path],
                     capture_output=True, text=True).stdout
rows, seen = [], set()
for line in out.splitlines():
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*?)(?: \[.*\])?$", line)
    if not m:
        continue
    fn = m.group(2).split(":", 1)[-1]
    own = fn.startswith("gateway::") or fn.startswith("<gateway::")
    if own and "Connections" not in fn and "drop_in_place" not in fn and fn not in seen:
        seen.add(fn)
        rows.append((int(m.group(1).replace(",", "")) // n, fn))
for ir, fn in sorted(rows, reverse=True)[:top]:
    print("   %8d  %s" % (ir, fn[:150]))
PY
}

echo "== callgrind: $N requests per run after 300 of warm-up; MODES='$MODES'"
for bin in "${BIN_LIST[@]}"; do
    for mode in $MODES; do
        args=(-c "$TMP/gw.yaml")
        case $mode in
            gateway) config false >"$TMP/gw.yaml" ;;
            gateway-log) config true >"$TMP/gw.yaml" ;;
            bare) config false >"$TMP/gw.yaml"; args+=(--bare) ;;
            *) die "unknown mode '$mode' (gateway, gateway-log, bare)" ;;
        esac
        out=$TMP/callgrind-$mode.out
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "${args[@]}" 2>"$TMP/$mode.log" &
        pid=$!
        started "gateway-$mode" "$pid"
        READY_TIMEOUT=90 wait_ready "gateway-$mode" "$pid" "http://127.0.0.1:$P_GW/" "" "$TMP/$mode.log"
        "$OHA" -n 300 -c 4 --no-tui "http://127.0.0.1:$P_GW/" >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        "$OHA" -n "$N" -c 4 --no-tui "http://127.0.0.1:$P_GW/" >"$TMP/oha-$mode.txt"
        callgrind_control -d "$pid" >/dev/null 2>&1
        stop_named "gateway-$mode"
        grep -q 'Success rate:.*100.00%' "$TMP/oha-$mode.txt" || die "$mode: not every request succeeded ($TMP/oha-$mode.txt)"
        # The dump made by callgrind_control (the exit writes another: the shutdown's).
        dump=$(find "$TMP" -name "callgrind-$mode.out.*" | sort | head -1)
        [[ -n $dump ]] || die "$mode: no callgrind dump in $TMP"
        echo "== $bin $mode"
        summarize "$dump" "$N"
        rm -f "$TMP/callgrind-$mode.out"*
    done
done
