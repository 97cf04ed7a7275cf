#!/usr/bin/env python3
"""The load-test harness's one Python program (python3, standard library only).

The scripts (run.sh, ratelimit.sh, regions.sh, breaker.sh, slowloris.sh, ab.sh) start
and stop the servers and run wrk; what they measure they leave as files in their temp dir
(wrk outputs, /metrics texts, Redis INFO, the probes' records), and this program parses,
adds up and prints it: `report.py SUBCOMMAND ...` (`report.py -h` lists them). The
probes the scripts run in the background (samplers, the slowloris attacker, the
breaker's kill watcher, ...) live here too, so that /metrics has one parser.

State: the temp dir named by $LOADTEST_TMP (lib.sh's setup_tmp exports it) holds
report.json (title, settings, load at start), summary.txt (the summary lines, printed
as they come) and missed.txt (the targets found missed).

To add a figure, add a line to the table of its script below (RUN_COLUMNS, RUN_COSTS,
RUN_GATEWAY_FIGURES, RATELIMIT_FIGURES, ...); to add a target, name it in the script's
table (run.sh's TARGETS) -- its role follows from its name (see run_role).
"""
import argparse
import asyncio
import base64
import datetime
import glob
import hashlib
import hmac
import http.client
import json
import math
import os
import platform
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ==================================================================== parsers
def awk_num(v):
    """A number as awk prints it (integers whole, others %.6g); NA for None."""
    if v is None:
        return "NA"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return "%.6g" % v


def fmt(v, spec):
    """format(v, spec), or NA when v is None."""
    return "NA" if v is None else format(v, spec)


class Wrk:
    """One wrk output: rps, p50 and p99 (ms; need --latency), non2xx, sockerr, requests."""
    UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}

    def __init__(self, text):
        self.rps_text, self.rps, self.p50, self.p99, self.requests = "NA", None, None, None, None
        self.non2xx = self.sockerr = 0
        dist = False
        for line in text.splitlines():
            f = line.split()
            if "Latency Distribution" in line:
                dist = True
            elif dist and f and f[0] in ("50%", "99%"):
                setattr(self, "p" + f[0][:2], self.ms(f[1]))
                dist = f[0] != "99%"
            elif "requests in" in line:
                self.requests = int(f[0])
            elif line.startswith("Requests/sec:"):
                self.rps_text, self.rps = f[1], float(f[1])
            elif "Non-2xx or 3xx responses:" in line:
                self.non2xx = int(f[-1])
            elif "Socket errors:" in line:
                g = line.replace(",", "").split()  # Socket errors: connect N read N write N timeout N
                self.sockerr = sum(int(g[i]) for i in (3, 5, 7, 9))

    @classmethod
    def ms(cls, v):
        m = re.fullmatch(r"([0-9.]+)([a-z]+)", v)
        return float(m.group(1)) * cls.UNITS[m.group(2)] if m and m.group(2) in cls.UNITS else None

    @classmethod
    def file(cls, path):
        return cls(read(path))

    def tsv(self):
        """rps p50_ms p99_ms non2xx socket_errors requests, as run.sh's runs.tsv has them."""
        return [self.rps_text, awk_num(self.p50), awk_num(self.p99), str(self.non2xx),
                str(self.sockerr), awk_num(self.requests)]

    def row(self, label, width=9):
        """A row of the per-phase tables (breaker.sh, slowloris.sh)."""
        return "   %-*s %9s %10s %10s %9s %11s %9s" % (
            width, label, fmt(self.rps, ".0f"), fmt(self.p50, ".3f"), fmt(self.p99, ".3f"),
            self.non2xx, self.sockerr, awk_num(self.requests))


class Oha:
    """One oha JSON report (`oha --output-format json`, older releases `--json`): rps
    (responses per second, like wrk's Requests/sec), oha_rps (oha's own requestsPerSec,
    which also counts the requests that ended in an error), p50 and p99 (ms, over the
    responses), success_rate (oha's: responses / (responses + errors), the requests
    aborted by the -z deadline left out), statuses {code: count}, errors {message:
    count}, deadline (requests aborted at the -z deadline), responses, total_s. All
    None / empty when the file is not such a report (oha did not run or was killed)."""
    DEADLINE = "aborted due to deadline"

    def __init__(self, text):
        self.rps = self.oha_rps = self.p50 = self.p99 = self.success_rate = self.total_s = None
        self.responses = None
        self.statuses, self.errors, self.deadline = {}, {}, 0
        try:
            j = json.loads(text)
            summary, pct = j["summary"], j.get("latencyPercentiles") or {}
        except (ValueError, KeyError, TypeError):
            return
        self.statuses = {str(k): int(v) for k, v in (j.get("statusCodeDistribution") or {}).items()}
        errors = {str(k): int(v) for k, v in (j.get("errorDistribution") or {}).items()}
        self.deadline = errors.pop(self.DEADLINE, 0)
        self.errors = errors
        self.responses = sum(self.statuses.values())
        self.total_s, self.oha_rps = summary.get("total"), summary.get("requestsPerSec")
        self.success_rate = summary.get("successRate")  # null (NaN) when nothing came back
        if self.total_s:
            self.rps = self.responses / self.total_s
        for k in ("p50", "p99"):
            v = pct.get(k)
            setattr(self, k, None if v is None else v * 1000.0)

    @classmethod
    def file(cls, path):
        return cls(read(path))

    @property
    def non2xx(self):
        """Responses with a status other than 2xx or 3xx (what wrk counts as non-2xx)."""
        return sum(n for code, n in self.statuses.items() if not code[:1] in ("2", "3"))

    @property
    def n_errors(self):
        """Requests that ended in an error other than the -z deadline."""
        return sum(self.errors.values())

    @staticmethod
    def dist(d):
        """{key: count} -> "key:count,..." (most frequent first; "-" when empty)."""
        return ",".join("%s:%d" % kv for kv in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"

    def tsv(self):
        """rps p50_ms p99_ms success_rate statuses (code:count,...) errors (a JSON object:
        the messages may hold commas) deadline_aborts responses oha_rps, as run.sh's
        oha-runs.tsv has them."""
        return [fmt(self.rps, ".2f"), awk_num(self.p50), awk_num(self.p99), awk_num(self.success_rate),
                self.dist(self.statuses), json.dumps(self.errors, sort_keys=True), str(self.deadline),
                awk_num(self.responses), fmt(self.oha_rps, ".2f")]


def row_head(width=9):
    return "   %-*s %9s %10s %10s %9s %11s %9s" % (
        width, "phase", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket-err", "requests")


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> [(name, {label: value}, float)]."""
    out = []
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if not m or line[0] == "#":
            continue
        try:
            out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
        except ValueError:
            pass
    return out


class Metrics:
    """A /metrics text; msum('name{label="regex",...}') sums the matching samples
    (labels must match whole), None when the text is empty (the scrape failed)."""

    def __init__(self, text):
        self.text = text
        self.samples = parse_metrics(text)

    @classmethod
    def file(cls, path):
        return cls(read(path))

    def msum(self, selector):
        name, _, labels = selector.partition("{")
        want = [(k, re.compile(v)) for k, v in LABEL.findall(labels)]
        if not self.text.strip():
            return None
        return sum(v for n, lab, v in self.samples
                   if n == name and all(r.fullmatch(lab.get(k, "")) for k, r in want))

    def has(self, name):
        return any(n == name for n, _, _ in self.samples)

    def get(self, selector):
        v = self.msum(selector)
        return None if v is None else int(v) if float(v).is_integer() else v


def redis_evalsha(text):
    """Redis INFO commandstats -> EVALSHA calls (one per key per lease round trip)."""
    m = re.search(r"^cmdstat_evalsha:calls=(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def proc_ticks(text):
    """{pid: utime + stime, in clock ticks} from /proc/PID/stat lines (lib.sh's proc_stats).
    A process's line counts all its threads; the command name, in parentheses, may hold
    spaces and parentheses itself, so the fields are counted from its last ") "."""
    out = {}
    for line in text.splitlines():
        head, sep, rest = line.rpartition(") ")
        f = rest.split()
        if sep and len(f) >= 13 and f[11].isdigit() and f[12].isdigit():
            out[head.split(" (", 1)[0].strip()] = int(f[11]) + int(f[12])  # fields 14 and 15
    return out


def cpu_delta(before, after):
    """The clock ticks the processes of AFTER used since BEFORE (two proc_ticks snapshots;
    a process started in between counts from 0), and the pids of BEFORE that are gone
    (their time since BEFORE is lost). None when AFTER is empty (the process died)."""
    if not after:
        return None, sorted(before)
    return sum(t - before.get(p, 0) for p, t in after.items()), sorted(set(before) - set(after))


STUB_STATUS = re.compile(r"Active connections:\s*(\d+)\s+server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                         r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


def stub_status(text):
    """nginx's stub_status page: {active, accepts, handled, requests, reading, writing,
    waiting}; {} when the text is not one (the read failed)."""
    m = STUB_STATUS.search(text)
    keys = ("active", "accepts", "handled", "requests", "reading", "writing", "waiting")
    return dict(zip(keys, map(int, m.groups()))) if m else {}


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def read_kv(path):
    """key=value lines -> dict (the first of each key)."""
    out = {}
    for line in read(path).splitlines():
        k, sep, v = line.partition("=")
        if sep and k not in out:
            out[k] = v
    return out


def facts(words):
    """["k=v", ...] -> {k: v} (words without "=" belong to the value before: "phases=a b")."""
    out, k = {}, None
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = v
        elif k:
            out[k] += " " + w
    return out


def num(v):
    """A float from a string, None for NA/empty."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ratio(a, b, spec=".2f", none="NA"):
    return none if a is None or b is None or b <= 0 else format(a / b, spec)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ==================================================================== state & summary
class State:
    """The script's temp dir: report.json, summary.txt, missed.txt."""

    def __init__(self):
        self.dir = os.environ.get("LOADTEST_TMP") or sys.exit("report.py: LOADTEST_TMP is not set")
        self.meta = json.loads(read(self.path("report.json"), "{}"))
        self.settings = facts(self.meta.get("settings", "").split())

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def save(self):
        with open(self.path("report.json"), "w") as f:
            json.dump(self.meta, f)

    def sum(self, line):
        """Prints a summary line and keeps it for the results file."""
        print(line, flush=True)
        with open(self.path("summary.txt"), "a") as f:
            f.write(line + "\n")

    def verdict(self, ok, label):
        """'ok', or 'MISSED' (remembered for the closing verdict line)."""
        if ok:
            return "ok"
        with open(self.path("missed.txt"), "a") as f:
            f.write(label + "\n")
        return "MISSED"

    def missed(self):
        return read(self.path("missed.txt")).split()


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.rstrip("\n")


def load_avg():
    return uptime().split("load average: ")[-1]


def busy_processes():
    """The processes using 5 % of a CPU or more (at most 5), from top."""
    try:
        out = subprocess.run(["top", "-b", "-n", "1", "-o", "%CPU"], capture_output=True,
                             text=True).stdout
    except OSError:
        return []
    rows = []
    for line in out.splitlines()[7:]:
        f = line.split()
        if len(f) >= 12 and (num(f[8].replace(",", ".")) or 0) >= 5:
            rows.append("   %5s%% cpu  %s (pid %s)" % (f[8], f[11], f[0]))
    return rows[:5]


def show_load(st, when):
    print("== machine load (%s): %s" % (when, uptime()))
    top = busy_processes()
    for r in top:
        print(r)
    st.meta["load_" + when], st.meta["top_" + when] = load_avg(), top
    st.save()


def version(tool):
    def run(*cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout + p.stderr).strip()
        except OSError:
            return ""
    if tool == "nginx":
        return run(os.environ.get("LOADTEST_NGINX", "nginx"), "-v").rsplit("/", 1)[-1] or "NA"
    if tool == "redis":
        f = run(os.environ.get("LOADTEST_REDIS_SERVER", "redis-server"), "--version").split()
        return f[2] if len(f) > 2 else "NA"
    if tool == "haproxy":  # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/", then more lines
        m = re.match(r"HAProxy version (\S+)", run(os.environ.get("LOADTEST_HAPROXY", "haproxy"), "-v"))
        return m.group(1) if m else "NA"
    if tool == "pingap":  # "pingap 0.13.1 (<git sha>)"
        f = run(os.environ.get("LOADTEST_PINGAP", "pingap"), "--version").split()
        return f[1] if len(f) > 1 and f[0] == "pingap" else "NA"
    if tool == "wrk":
        f = run("wrk", "-v").split()
        return f[1] if len(f) > 1 else "NA"
    if tool == "oha":
        f = run(os.environ.get("LOADTEST_OHA", "oha"), "--version").split()
        return f[1] if len(f) > 1 else "NA"
    if tool == "python":
        return platform.python_version()
    return "NA"


def git_rev():
    def git(*a):
        return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True)
    rev = git("rev-parse", "--short", "HEAD").stdout.strip() or "NA"
    return rev + ("" if git("diff", "--quiet", "HEAD", "--", "src").returncode == 0 else "+dirty")


def log_summary(path, top, strip_ids=False):
    """The WARN/ERROR lines of a gateway log (or pingap's), counted by kind (numbers masked as N)."""
    lines = [l for l in read(path).splitlines() if re.search(r" (WARN|ERROR) ", l)]
    if not lines:
        return
    label = os.path.splitext(os.path.basename(path))[0]
    print("== %s log: %d warning/error line(s), most frequent (%s):" % (label, len(lines), path))
    counts = {}
    for l in lines:
        l = re.sub(r"^\[\S+ |^\d{4}-\d\d-\d\dT\S+ +", "", l)  # the gateway's "[time " or pingap's "time "
        if strip_ids:
            l = re.sub(r" request_id=\S*", "", l, count=1)
        l = re.sub(r"[0-9]+", "N", l)
        counts[l] = counts.get(l, 0) + 1
    for l, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:top]:
        print("   " + ("%7d %s" % (n, l))[:200].lstrip(" "))


# ==================================================================== common subcommands
def cmd_load(a):
    """Shows the machine load and the busiest processes."""
    show_load(State(), a.when)


def cmd_begin(a):
    """Records the title and settings, shows the machine load at start."""
    st = State()
    st.meta.update(prefix=a.prefix, title=a.title, settings=a.settings, versions=a.versions)
    show_load(st, "start")


def cmd_finish(a):
    """Load at end, the closing summary lines, and the results file."""
    st = State()
    if a.died and a.verdict:
        st.sum("## WARNING: died during the run: " + a.died)
    show_load(st, "end")
    if a.machine_line:
        def procs(rows):
            return "; ".join(r.strip() for r in rows) or "none"
        st.sum("## machine: %d cpus, load average at start %s, at end %s; processes using >= 5 %% "
               "of a CPU at start: %s, at end: %s" % (
                   os.cpu_count(), st.meta.get("load_start"), st.meta.get("load_end"),
                   procs(st.meta.get("top_start", [])), procs(st.meta.get("top_end", []))))
    if a.verdict:
        missed = st.missed()
        st.sum("## verdict: every target met" if not missed else
               "## verdict: %d target(s) missed: %s" % (len(missed), " ".join(missed)))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(a.results_dir, exist_ok=True)
    result = os.path.join(a.results_dir, st.meta.get("prefix", "") + stamp + ".txt")
    versions = " ".join("%s=%s" % (t, version(t)) for t in st.meta.get("versions", "").split(",") if t)
    head = ["# %s %s" % (st.meta.get("title", "load test"), stamp), "git_rev=" + git_rev(),
            "gateway_bin=" + (a.gateway_bin or "NA"), st.meta.get("settings", ""),
            ("cpus=%d %s" % (os.cpu_count(), versions)).strip(),
            "load_start=%s" % st.meta.get("load_start"), "load_end=%s" % st.meta.get("load_end")]
    if a.died:
        head.append("died_during_run=" + a.died)
    head.append("tmp_dir=" + st.dir)
    body = read(a.body or st.path("summary.txt"))
    with open(result, "w") as f:
        f.write("\n".join(head) + "\n" + body)
    if a.echo_summary:
        print("\n== summary\n" + read(st.path("summary.txt")), end="")
    elif a.verdict:
        print()
    print("== summary written to " + result)


def wrk_line(width, label, path, rc, extra=""):
    w = Wrk.file(path)
    return "   %-*s %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx %s  socket errors %s%s%s" % (
        width, label, w.rps_text, fmt(w.p50, ".3f"), fmt(w.p99, ".3f"), w.non2xx, w.sockerr, extra,
        "  (wrk exit %s)" % rc if rc != "0" else "")


def cmd_wrk_line(a):
    """The line printed after a wrk run."""
    print(wrk_line(a.width, a.label, a.file, a.rc), flush=True)


def cmd_metric(a):
    """The sum of the samples matching SELECTOR (NA when the text is empty)."""
    print(awk_num(Metrics(sys.stdin.read() if a.file == "-" else read(a.file)).msum(a.selector)))


def cmd_header(a):
    """The value of a response header in a `curl -D` file (nothing when absent)."""
    for line in read(a.file).splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == a.name.lower():
            print(v.strip())
            return


def cmd_evalsha(a):
    """Redis's count of EVALSHA commands in an INFO commandstats text."""
    print(redis_evalsha(sys.stdin.read() if a.file == "-" else read(a.file)))


def cmd_kv(a):
    """The value of KEY in a file of key=value lines (NA when absent)."""
    print(read_kv(a.file).get(a.key) or "NA")


def cmd_sum(a):
    """Prints a line and adds it to the summary."""
    State().sum(a.line)


def cmd_logs(a):
    """The most frequent warning/error lines of each log."""
    for path in a.files:
        log_summary(path, a.top, a.strip_ids)


def cmd_ports(a):
    """N distinct free loopback ports, held open together while they are chosen."""
    socks = []
    for _ in range(a.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cmd_jwt(a):
    """A signed JWT (sub loadtest): HS256 with the secret in $JWT_SECRET, RS256 with openssl."""
    def enc(obj):
        return b64url(json.dumps(obj, separators=(",", ":")).encode())
    signing = enc({"alg": a.alg, "typ": "JWT", "kid": a.kid}) + "." + enc(
        {"sub": "loadtest", "iss": a.iss, "aud": a.aud, "exp": a.exp})
    if a.alg == "HS256":
        sig = hmac.new(os.environ["JWT_SECRET"].encode(), signing.encode(), hashlib.sha256).digest()
    else:
        sig = subprocess.run([os.environ.get("OPENSSL", "openssl"), "dgst", "-sha256", "-sign",
                              a.key, "-binary"], input=signing.encode(), capture_output=True,
                             check=True).stdout
    print(signing + "." + b64url(sig))


# ==================================================================== run.sh
# The summary table: header, width (negative: left-aligned), value of the target's row.
RUN_COLUMNS = [
    ("target", -22, lambda r: r["target"]),
    ("CPU µs/req", 10, lambda r: fmt(r["cpu"], ".1f")),
    ("CPU vs nginx", 12, lambda r: r["cpu_vs_nginx"]),
    ("req/s", 10, lambda r: fmt(r["rps"], ".0f")),
    ("p50 ms", 9, lambda r: fmt(r["p50"], ".3f")),
    ("p99 ms", 9, lambda r: fmt(r["p99"], ".3f")),
    ("vs nginx", 9, lambda r: r["vs_nginx"]),
    ("vs gateway", 10, lambda r: r["vs_gateway"]),
    ("upconn/1k", 10, lambda r: r["upconn"]),
    ("non-2xx", 8, lambda r: r["non2xx"]),
    ("sock-err", 8, lambda r: r["sockerr"]),
]
# The lines of ratios after the table: title, (target, base) pairs (those that ran), tail,
# the figure compared (rps: median req/s; cpu: median CPU time per request).
LIMITERS = [("nginx-limited", "nginx"), ("gateway-limited", "gateway"), ("gateway-limited-redis", "gateway")]
AUTHS = [("gateway-jwt-hs", "gateway"), ("gateway-jwt-rs", "gateway")]
RUN_COSTS = [
    ("limiter cost, req/s with the limiter on / off (1.00 = free): ", LIMITERS, "", "rps"),
    ("auth cost: ", AUTHS,
     " (req/s with JWT auth on / off, 1.00 = free; one reused token: verified-token cache hits)", "rps"),
    ("limiter cost, CPU per request with the limiter on / off (1.00 = free): ", LIMITERS, "", "cpu"),
    ("auth cost, CPU per request with JWT auth on / off (1.00 = free): ", AUTHS, "", "cpu"),
    ("features cost, CPU per request of the full gateway / --bare: ", [("gateway", "gateway-bare")], "", "cpu"),
    ("every feature's cost, CPU per request of gateway-full (JWT, Redis-leased limit, log, metrics) / --bare: ",
     [("gateway-full", "gateway-bare")], "", "cpu"),
]
# What is read from each full gateway's /metrics at the end: key (the results file has
# <gateway>_<key>=), the role that has it (run_role), selector.
RUN_GATEWAY_FIGURES = [
    ("5xx", "full", 'gateway_requests_total{status="5.."}'),
    ("429", "full", 'gateway_requests_total{status="429"}'),
    ("requests_total", "full", "gateway_requests_total"),
    ("access_log_dropped", "full", "gateway_access_log_dropped_total"),
    ("pool_reuse_races", "full", "gateway_upstream_pool_reuse_races_total"),
    ("ratelimit_allowed", "limited", 'gateway_ratelimit_decisions_total{outcome="allowed"}'),
    ("ratelimit_limited", "limited", 'gateway_ratelimit_decisions_total{outcome="limited"}'),
    ("ratelimit_fallback", "limited", 'gateway_ratelimit_decisions_total{outcome="fallback"}'),
    ("redis_round_trips", "redis", "gateway_ratelimit_redis_round_trips_total"),
    ("redis_errors", "redis", "gateway_ratelimit_redis_errors_total"),
]
# The lines printed for each full gateway: the role that has it, %-template of the
# figures above and of those cmd_run_report adds (run_*, redis_*, access_log_*).
RUN_GATEWAY_LINES = [
    ("full", "== %(gateway)s /metrics: %(5xx)s responses with status 5xx, %(429)s with 429, %(requests_total)s "
             "requests in total, access-log lines dropped: %(access_log_dropped)s, pooled upstream connections "
             "dropped instead of reused (Pingora's reuse race, each a new connect): %(pool_reuse_races)s"),
    ("jwt", "   during the load: %(run_requests)s requests: %(run_200)s answered 200, %(run_other_status)s answered "
            "otherwise, %(run_unanswered)s unanswered (in flight when %(tools)s stopped)"),
    ("limited", "   rate-limit decisions: allowed %(ratelimit_allowed)s, limited %(ratelimit_limited)s, fallback "
                "%(ratelimit_fallback)s%(redis)s"),
    ("access_log", "   access log: %(access_log_lines)s lines, %(access_log_size)s"),
]
RUNS_HEAD = ["round", "target", "rps", "p50_ms", "p99_ms", "non2xx", "socket_errors", "requests", "wrk_rc"]
# What each measured run cost (run.sh: `round` / `oha-round` with --cpu and
# --upstream-status): cost.tsv, one row a run and tool. requests: what the tool completed
# (wrk's "requests in", oha's responses); cpu_ticks: utime + stime of the target's
# processes (nginx: master and workers) over the run; procs: how many; upstream_accepts
# and upstream_requests: the deltas of the upstream nginx's stub_status counters, less
# the after-read's own connection and request (the before-read's is in the before count).
COST_HEAD = ["round", "target", "tool", "requests", "cpu_ticks", "cpu_us_per_request", "procs",
             "upstream_accepts", "upstream_connects_per_1000", "upstream_requests"]
STATUS_READS = 1  # connections (and requests) of the stub_status reads in a before/after delta
ROUND_LABEL_WIDTH = {False: 30, True: 35}  # a round's line: "round N  TARGET" (wrk only), "... wrk|oha" (both)
# oha's runs (LOAD_TOOLS with oha): oha-runs.tsv, and the side-by-side table of wrk and
# oha (medians over the rounds of req/s and p99; totals of oha's statuses and errors).
OHA_RUNS_HEAD = ["round", "target", "rps", "p50_ms", "p99_ms", "success_rate", "statuses", "errors",
                 "deadline_aborts", "responses", "oha_rps", "oha_rc"]
SIDE_COLUMNS = [
    ("target", -22, lambda r, o: r["target"]),
    ("wrk req/s", 10, lambda r, o: fmt(r["rps"], ".0f")),
    ("oha req/s", 10, lambda r, o: fmt(o["rps"], ".0f")),
    ("oha/wrk", 8, lambda r, o: ratio(o["rps"], r["rps"])),
    ("wrk p99 ms", 11, lambda r, o: fmt(r["p99"], ".3f")),
    ("oha p99 ms", 11, lambda r, o: fmt(o["p99"], ".3f")),
    ("wrk non-2xx", 12, lambda r, o: r["non2xx"]),
    ("oha success", 12, lambda r, o: "NA" if o["success"] is None else "%.2f%%" % (100 * o["success"])),
    ("oha errors", 11, lambda r, o: "%d" % sum(o["errors"].values())),
    ("aborted", 8, lambda r, o: "%d" % o["deadline"]),
    ("oha statuses", -1, lambda r, o: Oha.dist(o["statuses"])),
]
# ... with these before "oha statuses" when cost.tsv has oha's runs
SIDE_CPU_COLUMNS = [
    ("wrk CPU µs/req", 15, lambda r, o: fmt(r["cpu"], ".1f")),
    ("oha CPU µs/req", 15, lambda r, o: fmt(o["cpu"], ".1f")),
]


def run_role(target):
    """A run.sh target's roles, from its name: full (a gateway with /metrics, request
    ids, access log: every gateway but --bare), limited, redis, jwt."""
    full = target.startswith("gateway") and target != "gateway-bare"
    every = target == "gateway-full"  # every feature: JWT, the Redis-leased limit
    return {"full": full, "limited": every or target.startswith("gateway-limited"),
            "redis": every or (full and "redis" in target),
            "jwt": every or target.startswith("gateway-jwt-")}


def cmd_round(a):
    """Records one measured wrk run in runs.tsv and prints its line."""
    st = State()
    runs = st.path("runs.tsv")
    new = not os.path.exists(runs)
    with open(runs, "a") as f:
        if new:
            f.write("\t".join(RUNS_HEAD) + "\n")
        f.write("\t".join([a.round, a.target] + Wrk.file(a.file).tsv() + [a.rc]) + "\n")
    label = "round %s  %s" % (a.round, a.target)
    if len(run_tools(st)) > 1:  # wrk's and oha's lines in turn: name the tool
        label += "  wrk"
    extra = run_cost(st, a, "wrk", Wrk.file(a.file).requests)
    print(wrk_line(ROUND_LABEL_WIDTH[len(run_tools(st)) > 1], label, a.file, a.rc, extra), flush=True)


def clk_tck(st):
    """Clock ticks per second of /proc/PID/stat (run.sh records `getconf CLK_TCK`)."""
    return int(st.settings.get("clk_tck") or os.sysconf("SC_CLK_TCK"))


def cost_of(requests, cpu, status, hz):
    """One run's costs from the snapshots before and after it: CPU (texts of
    /proc/PID/stat lines) and the upstream's stub_status (texts). A COST_HEAD row's
    values from requests on (None: not known), and the pids gone during the run."""
    ticks, gone = cpu_delta(proc_ticks(cpu[0]), proc_ticks(cpu[1]))
    s0, s1 = stub_status(status[0]), stub_status(status[1])
    accepts = s1["accepts"] - s0["accepts"] - STATUS_READS if s0 and s1 else None
    upreq = s1["requests"] - s0["requests"] - STATUS_READS if s0 and s1 else None
    per = lambda x, k: None if x is None or not requests else x * k / requests
    return {"requests": requests, "cpu_ticks": ticks, "cpu_us_per_request": per(ticks, 1e6 / hz),
            "procs": len(proc_ticks(cpu[1])), "upstream_accepts": accepts,
            "upstream_connects_per_1000": per(accepts, 1000), "upstream_requests": upreq}, gone


def run_cost(st, a, tool, requests):
    """With --cpu and --upstream-status: a row of cost.tsv, and the text added to the
    run's line ("" without them)."""
    if not a.cpu or not a.upstream_status:
        return ""
    c, gone = cost_of(requests, [read(f) for f in a.cpu], [read(f) for f in a.upstream_status], clk_tck(st))
    if gone:
        print("== WARNING: round %s %s %s: process(es) %s ended during the run: their CPU time is missing" % (
            a.round, a.target, tool, " ".join(gone)), file=sys.stderr)
    path = st.path("cost.tsv")
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write("\t".join(COST_HEAD) + "\n")
        f.write("\t".join([a.round, a.target, tool] + [
            fmt(c[k], ".3f") if k.endswith("per_request") or k.endswith("_1000") else awk_num(c[k])
            for k in COST_HEAD[3:]]) + "\n")
    conn = "client" if a.target == "upstream" else "upstream"  # (the upstream's clients are wrk's, oha's)
    return "  CPU %s µs/req  %s connects %s (%s/1000 req)" % (
        fmt(c["cpu_us_per_request"], ".1f"), conn, awk_num(c["upstream_accepts"]),
        fmt(c["upstream_connects_per_1000"], ".3f"))


def run_table(st, targets):
    """run.sh's rows (medians over the rounds, totals, ratios) from runs.tsv."""
    runs = [dict(zip(RUNS_HEAD, l.split("\t"))) for l in read(st.path("runs.tsv")).splitlines()[1:]]
    col = lambda t, c: [num(r[c]) for r in runs if r["target"] == t]
    rows = {}
    for t in targets:
        r = rows[t] = {"target": t}
        for k, c in (("rps", "rps"), ("p50", "p50_ms"), ("p99", "p99_ms")):
            m = median(col(t, c))
            r[k] = None if m is None else round(m, 3)
        r["non2xx"] = "%d" % sum(v or 0 for v in col(t, "non2xx"))
        r["sockerr"] = "%d" % sum(v or 0 for v in col(t, "socket_errors"))
    costs = run_costs(st, targets, "wrk")
    for t, r in rows.items():
        r["vs_nginx"] = run_ratio(rows, t, "nginx")
        r["vs_gateway"] = run_ratio(rows, t, "gateway") if t.startswith("gateway") else "-"
        r["cpu"], r["upconn_n"] = costs[t]["cpu"], costs[t]["upconn"]
    for t, r in rows.items():
        r["cpu_vs_nginx"] = run_ratio(rows, t, "nginx", "cpu")
        # the upstream target's accepts are its clients' connections, not a proxy's
        r["upconn"] = "-" if t == "upstream" else fmt(r["upconn_n"], ".3f")
    return rows


def run_costs(st, targets, tool):
    """{target: {cpu, upconn}}: the medians over the rounds of TOOL's runs in cost.tsv of
    the CPU time per request (µs) and the upstream connections per 1,000 requests; None
    without them (a run before cost.tsv, or a failed read)."""
    runs = [dict(zip(COST_HEAD, l.split("\t"))) for l in read(st.path("cost.tsv")).splitlines()[1:]]
    col = lambda t, c: [num(r[c]) for r in runs if r["target"] == t and r["tool"] == tool]
    return {t: {"cpu": median(col(t, "cpu_us_per_request")), "upconn": median(col(t, "upstream_connects_per_1000"))}
            for t in targets}


def run_tools(st):
    """The load generators of the run (settings load_tools; wrk alone before oha came)."""
    return st.settings.get("load_tools", "wrk").split(",")


def cmd_oha_round(a):
    """Records one measured oha run in oha-runs.tsv and prints its line."""
    st = State()
    runs, o = st.path("oha-runs.tsv"), Oha.file(a.file)
    new = not os.path.exists(runs)
    with open(runs, "a") as f:
        if new:
            f.write("\t".join(OHA_RUNS_HEAD) + "\n")
        f.write("\t".join([a.round, a.target] + o.tsv() + [a.rc]) + "\n")
    extra = run_cost(st, a, "oha", o.responses)
    print("   %-*s %10s req/s  p50 %8s ms  p99 %8s ms  statuses %s  errors %d  aborted at the deadline %d%s%s" % (
        ROUND_LABEL_WIDTH[True], "round %s  %s  oha" % (a.round, a.target), fmt(o.rps, ".2f"), fmt(o.p50, ".3f"), fmt(o.p99, ".3f"),
        Oha.dist(o.statuses), o.n_errors, o.deadline, extra, "  (oha exit %s)" % a.rc if a.rc != "0" else ""), flush=True)


def oha_table(st, targets):
    """oha's rows from oha-runs.tsv: medians over the rounds of rps, p50, p99; totals of
    statuses, errors, deadline aborts and responses; success = oha's success rate over
    the totals. {} when oha did not run."""
    text = read(st.path("oha-runs.tsv"))
    if not text:
        return {}
    runs = [dict(zip(OHA_RUNS_HEAD, l.split("\t"))) for l in text.splitlines()[1:]]
    rows = {}
    for t in targets:
        mine = [r for r in runs if r["target"] == t]
        o = rows[t] = {"target": t, "statuses": {}, "errors": {}, "deadline": 0, "responses": 0}
        for k, c in (("rps", "rps"), ("p50", "p50_ms"), ("p99", "p99_ms")):
            m = median([num(r[c]) for r in mine])
            o[k] = None if m is None else round(m, 3)
        for r in mine:
            for item in r["statuses"].split(","):
                code, sep, n = item.rpartition(":")
                if sep:
                    o["statuses"][code] = o["statuses"].get(code, 0) + int(n)
            for msg, n in json.loads(r["errors"] or "{}").items():
                o["errors"][msg] = o["errors"].get(msg, 0) + n
            o["deadline"] += int(num(r["deadline_aborts"]) or 0)
            o["responses"] += int(num(r["responses"]) or 0)
        o["failed"] = ["round %s (oha exit %s)" % (r["round"], r["oha_rc"]) for r in mine
                       if r["oha_rc"] != "0" or num(r["rps"]) is None]
        o["non2xx"] = sum(n for code, n in o["statuses"].items() if code[:1] not in ("2", "3"))
        tried = o["responses"] + sum(o["errors"].values())
        o["success"] = o["responses"] / tried if tried else None
    for t, c in run_costs(st, targets, "oha").items():
        rows[t]["cpu"] = c["cpu"]
    return rows


def oha_report(st, rows, oha):
    """The side-by-side table of wrk and oha (printed; side-by-side.tsv), and a WARNING
    per target where oha saw errors or non-2xx/3xx statuses."""
    s = st.settings
    print("== wrk and oha side by side, the same targets: medians over %s round(s) of %ss, %s connections "
          "each (threads: wrk %s, oha %s); oha's statuses, errors and aborted requests are totals" % (
              s["rounds"], s["duration_s"], s["connections"], s["wrk_threads"], s.get("oha_threads", "NA")))
    cols = SIDE_COLUMNS
    if any(o["cpu"] is not None for o in oha.values()):
        cols = SIDE_COLUMNS[:-1] + SIDE_CPU_COLUMNS + SIDE_COLUMNS[-1:]
    print(" ".join("%*s" % (w, h) for h, w, _ in cols).rstrip())
    lines = ["\t".join(h.replace(" ", "_").replace("/", "_per_").replace("µs", "us") for h, _, _ in cols)]
    for t, r in rows.items():
        cells = [f(r, oha[t]) for _, _, f in cols]
        print(" ".join("%*s" % (w, c) for (_, w, _), c in zip(cols, cells)).rstrip())
        lines.append("\t".join(cells))
    with open(st.path("side-by-side.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for t, o in oha.items():
        if o["failed"]:
            print("== WARNING: %s: no oha report from %s: its stderr is in %s" % (
                t, ", ".join(o["failed"]), st.path("raw", "round<N>-%s-oha.json.err" % t)), file=sys.stderr)
        if o["errors"] or o["non2xx"]:
            print("== WARNING: %s: oha saw %d error(s) and %d non-2xx/3xx response(s): errors %s, statuses %s" % (
                t, sum(o["errors"].values()), o["non2xx"], Oha.dist(o["errors"]), Oha.dist(o["statuses"])),
                file=sys.stderr)


def run_ratio(rows, t, base, key="rps"):
    """Median req/s (KEY: or another figure) of T / BASE's, "-" when either is missing."""
    return ratio(rows[t][key], rows[base][key], none="-") if base in rows else "-"


def run_gateway(st, g, row):
    """The lines (printed) and results-file notes (returned) of one full gateway."""
    s, m = st.settings, Metrics.file(st.path(g + "-end.metrics"))
    role = dict(run_role(g), access_log=s["access_log"] == "on" and os.path.exists(st.path(g + "-access.log")))
    if m.msum("gateway_requests_total") is None:
        print("== WARNING: could not read %s's /metrics" % g, file=sys.stderr)
    v = {k: m.get(sel) for k, r, sel in RUN_GATEWAY_FIGURES if role[r]}
    if role["jwt"]:
        # Every request after the checks (warm-up and rounds) must have been answered
        # 200. Status 0 = not answered: the client left first, which wrk does with the
        # requests in flight when it stops (at most one per connection per wrk run).
        base = Metrics.file(st.path(g + "-base.metrics"))
        for k, sel in (("run_requests", "gateway_requests_total"), ("run_200", 'gateway_requests_total{status="200"}'),
                       ("run_unanswered", 'gateway_requests_total{status="0"}')):
            x, y = m.get(sel), base.get(sel)
            v[k] = None if x is None or y is None else x - y
        v["run_other_status"] = None if v["run_requests"] is None else \
            v["run_requests"] - v["run_200"] - v["run_unanswered"]
        # (oha, like wrk, leaves up to one request per connection unanswered per run: the
        # ones it aborts at its -z deadline)
        cap = int(s["connections"]) * (int(s["rounds"]) * len(run_tools(st)) + (1 if int(s["warmup_s"]) > 0 else 0))
        if v["run_requests"] is None:
            print("== WARNING: %s: no request counts from /metrics, cannot tell whether every response was a 200"
                  % g, file=sys.stderr)
        elif v["run_other_status"] != 0 or row["non2xx"] != "0" or row.get("oha_non2xx", 0) or v["run_unanswered"] > cap:
            print("== WARNING: %s: not every request during the load was a 200 (or more unanswered than wrk can "
                  "leave in flight, %d); by status:" % (g, cap), file=sys.stderr)
            for line in m.text.splitlines():
                if line.startswith("gateway_requests_total{"):
                    print("   " + line, file=sys.stderr)
    if role["limited"] and (v["ratelimit_limited"] != 0 or v["ratelimit_fallback"] != 0):
        print("== WARNING: %s limited %s and fell back %s time(s); the policy should never reject" % (
            g, awk_num(v["ratelimit_limited"]), awk_num(v["ratelimit_fallback"])), file=sys.stderr)
    if role["access_log"]:
        with open(st.path(g + "-access.log"), "rb") as f:
            v["access_log_lines"] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    notes = ["%s_%s=%s" % (g, k, awk_num(x)) for k, x in v.items()]
    t = dict(((k, awk_num(x)) for k, x in v.items()), gateway=g, redis="", tools=" or ".join(run_tools(st)))
    if role["redis"]:
        evalsha = redis_evalsha(read(st.path("redis-end.info")))
        notes.append("redis_evalsha_calls=%d" % evalsha)
        t["redis"] = "; Redis round trips %s (%s per request), EVALSHA calls %d, Redis errors %s" % (
            t["redis_round_trips"], "NA" if v["redis_round_trips"] is None else ratio(
                v["redis_round_trips"], v["requests_total"], ".5f"), evalsha, t["redis_errors"])
    if role["access_log"]:
        t["access_log_size"] = human_size(os.stat(st.path(g + "-access.log")).st_blocks * 512)
    for r, line in RUN_GATEWAY_LINES:
        if role[r]:
            print(line % t)
    return " ".join(notes)


def cmd_run_report(a):
    """run.sh's table of medians, cost lines, per-gateway counters, logs; writes
    summary.tsv and results-body.txt."""
    st, targets = State(), a.targets
    s, rows = st.settings, run_table(st, a.targets)
    oha = oha_table(st, a.targets)
    for t, o in oha.items():
        rows[t]["oha_non2xx"] = o["non2xx"]
    print("\n== medians over %s round(s), %ss each, %s connections" % (s["rounds"], s["duration_s"], s["connections"]))
    print(" ".join("%*s" % (w, h) for h, w, _ in RUN_COLUMNS))
    for r in rows.values():
        print(" ".join("%*s" % (w, f(r)) for _, w, f in RUN_COLUMNS))
    for title, pairs, tail, key in RUN_COSTS:
        got = ["%s/%s %s" % (t, b, run_ratio(rows, t, b, key)) for t, b in pairs
               if t in rows and b in rows and (key == "rps" or None not in (rows[t][key], rows[b][key]))]
        if got:
            print("== " + title + ", ".join(got) + tail)
    if oha:
        print()
        oha_report(st, rows, oha)
    print()
    notes = [run_gateway(st, g, rows[g]) for g in targets if run_role(g)["full"]]
    if "nginx-limited" in rows:
        # limit_req logs each rejection at "error" level; error_log is at "warn".
        n = read(st.path("nginx-limited-error.log")).count("limiting requests")
        print("== nginx-limited: %d request(s) rejected by limit_req (from its error log)" % n)
        notes.append("nginx_limited_rejected=%d" % n)
    for t, r in rows.items():
        print("== %s: wrk non-2xx/3xx responses %s, socket errors %s" % (t, r["non2xx"], r["sockerr"]))
    for t in targets:
        if t.startswith("gateway") or t == "pingap":  # (HAProxy's log has its alerts only; nginx's is apart)
            log_summary(st.path(t + ".log"), 4)
    with open(st.path("summary.tsv"), "w") as f:
        f.write("target\tmedian_rps\tmedian_p50_ms\tmedian_p99_ms\trps_vs_nginx\trps_vs_gateway\t"
                "non2xx_total\tsocket_errors_total\tmedian_cpu_us_per_request\tcpu_vs_nginx\t"
                "median_upstream_connects_per_1000\n")
        for r in rows.values():
            f.write("\t".join([r["target"], fmt(r["rps"], ".3f"), fmt(r["p50"], ".3f"), fmt(r["p99"], ".3f"),
                               r["vs_nginx"], r["vs_gateway"], r["non2xx"], r["sockerr"], fmt(r["cpu"], ".3f"),
                               r["cpu_vs_nginx"], r["upconn"] if r["upconn"] == "-" else fmt(r["upconn_n"], ".4f")])
                    + "\n")
    sides = "" if not oha else "## side by side (wrk and oha)\n%s## oha runs\n%s" % (
        read(st.path("side-by-side.tsv")), read(st.path("oha-runs.tsv")))
    cost = read(st.path("cost.tsv"))
    cost = "## cost per run (CPU, upstream connects)\n" + cost if cost else ""
    with open(st.path("results-body.txt"), "w") as f:
        f.write("".join(n + "\n" for n in notes) + "raw_dir=%s\n%s%s## summary\n%s## runs\n%s" % (
            st.path("raw"), sides, cost, read(st.path("summary.tsv")), read(st.path("runs.tsv"))))


def human_size(n):
    """Bytes as `du -h` prints them (1024-based, rounded up)."""
    for unit in ("K", "M", "G", "T"):
        n /= 1024
        if n < 1024 or unit == "T":
            return ("%.1f%s" % (math.ceil(n * 10) / 10, unit)) if n < 10 else "%d%s" % (math.ceil(n), unit)


# ==================================================================== ratelimit.sh
RATELIMIT_TARGETS = {"per_admitted_max": 0.05, "exact_min": 0.95, "exact_max": 1.00, "flood_evalsha_max": 10}
# The counters of a part (deltas of its gateways' /metrics, summed): key, selector.
RATELIMIT_FIGURES = [
    ("allowed", 'gateway_ratelimit_decisions_total{outcome="allowed"}'),
    ("limited", 'gateway_ratelimit_decisions_total{outcome="limited"}'),
    ("fallback", 'gateway_ratelimit_decisions_total{outcome="fallback"}'),
    ("no_lease", 'gateway_ratelimit_decisions_total{reason="no_lease"}'),
    ("waits", "gateway_ratelimit_lease_wait_seconds_count"),
    ("empty", 'gateway_ratelimit_decisions_total{reason="empty"}'),
    ("trips", "gateway_ratelimit_redis_round_trips_total"),
    ("r429", 'gateway_requests_total{status="429"}'),
    ("r200", 'gateway_requests_total{status="200"}'),
    ("r5xx", 'gateway_requests_total{status="5.."}'),
    ("requests", "gateway_requests_total"),
    ("rerr", "gateway_ratelimit_redis_errors_total"),
]
# Each part's verdicts: label, the key that holds its ok/MISSED, test (values v, targets T).
RATELIMIT_VERDICTS = {
    "a": [("a-evalsha", "v_eval", lambda v, T: v["allowed"] > 0 and float(v["per_eval"]) < T["per_admitted_max"]),
          ("a-round-trips", "v_trip", lambda v, T: v["allowed"] > 0 and float(v["per_trip"]) < T["per_admitted_max"])],
    "b": [("b-exactness", "v_exact", lambda v, T: T["exact_min"] <= float(v["exact"]) <= T["exact_max"]),
          ("b-fallback", "v_fallback", lambda v, T: v["fallback"] == 0),
          ("b-5xx", "v_5xx", lambda v, T: v["r5xx"] == 0)],
    "c": [("c-evalsha", "v_flood", lambda v, T: v["evalsha"] <= T["flood_evalsha_max"])],
    "d": [("d-exactness", "v_exact", lambda v, T: float(v["exact"]) <= T["exact_max"]),
          ("d-added-latency", "v_added", lambda v, T: v["waits"] < 0.01 * max(v["requests"], 1)),
          ("d-fallback", "v_fallback", lambda v, T: v["fallback"] == 0),
          ("d-5xx", "v_5xx", lambda v, T: v["r5xx"] == 0)],
    "e": [("e-exactness", "v_exact", lambda v, T: float(v["exact_200"]) <= T["exact_max"]),
          ("e-5xx", "v_5xx", lambda v, T: v["r5xx"] == 0)],
}
# Each part's summary lines, filled in with the values of cmd_ratelimit and the targets.
RATELIMIT_LINES = {
    "a": [
        "## a) Redis economy ({n} gateway, policy {rate}/s burst {burst}, key X-Client: hot, {wrk})",
        "   offered:          {reqs} requests in {elapsed}s ({rps} req/s by wrk), socket errors {sockerr}",
        "   admitted:         {allowed} ({admitted_per_s}/s), of at most {allowed_max} = burst {burst} + {rate}/s x "
        "{elapsed}s (admitted/allowed {exact})",
        "   rejected:         limited {limited} (429 by /metrics {r429}, non-2xx by wrk {non2xx}), fallback {fallback}, "
        "5xx {r5xx}",
        "   EVALSHA calls:    {evalsha}  ->  evalsha per admitted request     {per_eval}  (target < {per_admitted_max}: "
        "{v_eval})",
        "   round trips:      {trips}  ->  round trips per admitted request {per_trip}  (target < {per_admitted_max}: "
        "{v_trip}), Redis errors {rerr}",
    ],
    "b": [
        "## b) exactness ({n} gateways, one Redis, policy {rate}/s burst {burst}, key X-Client: hot, {n} x {wrk})",
        "   offered:          {reqs} requests in {elapsed}s, socket errors {sockerr}",
        "   admitted:         {allowed} over the {n} instances ({per_gateway})",
        "   allowed:          {allowed_max} = burst {burst} + {rate}/s x {elapsed}s",
        "   admitted/allowed: {exact}  (target {exact_min:.2f}..{exact_max:.2f}: {v_exact})",
        "   fallback:         {fallback}  (target 0: {v_fallback}), Redis errors {rerr}",
        "   5xx:              {r5xx}  (target 0: {v_5xx}); limited {limited} (429 by /metrics {r429}, non-2xx by wrk "
        "{non2xx})",
        "   EVALSHA calls:    {evalsha}, round trips {trips} ({per_trip} per admitted request)",
    ],
    "c": [
        "## c) flood on an exhausted key ({n} gateway, policy {rate} per {per} burst {burst}, key X-Client: hot, {wrk})",
        "   requests:         {reqs} ({rps} req/s by wrk), socket errors {sockerr}",
        "   429s:             {r429} by /metrics, {non2xx} non-2xx by wrk; admitted {allowed} (the burst: {burst}), "
        "fallback {fallback}, 5xx {r5xx}",
        "   EVALSHA calls:    {evalsha}  (target <= {flood_evalsha_max}: {v_flood}), round trips {trips}, Redis errors "
        "{rerr}",
    ],
    "d": [
        "## d) Redis {delay_ms} ms away, one way ({n} gateways, policy {rate}/s burst {burst}, key X-Client: hot, "
        "{n} x {wrk})",
        "   offered:          {reqs} requests in {elapsed}s, socket errors {sockerr}",
        "   admitted/allowed: {exact} ({allowed} of {allowed_max})  (target <= {exact_max:.2f}: {v_exact})",
        "   decisions:        limited {limited} (empty {empty}, no lease {no_lease}), fallback {fallback} (target 0: "
        "{v_fallback}), Redis errors {rerr}, 5xx {r5xx} ({v_5xx})",
        "   waited for lease: {waits} requests ({wait_pct}% of {requests}), {wait_mean} ms on average: the limiter's "
        "added latency is 0 at p50 and at p99 when under 1% wait ({v_added})",
        "   latency by wrk:   p50 {p50} ms, p99 {p99} ms (the slower gateway's, end to end on this machine); round "
        "trips {trips}, Redis round trip {rtt} ms (the gateways' moving average)",
    ],
    "e": [
        "## e) Redis lost: killed -9 at {kill_at}s, restarted empty {restart_after}s later ({n} gateways, policy "
        "{rate}/s burst {burst}, key X-Client: hot, {n} x {wrk})",
        "   offered:          {reqs} requests in {elapsed}s, socket errors {sockerr}",
        "   admitted/allowed: {exact_200} ({r200} responses 200, leased or decided by the fallback, of at most "
        "{allowed_max})  (target <= {exact_max:.2f}: {v_exact})",
        "   decisions:        fallback {fallback} (while Redis was away), limited {limited}, Redis errors {rerr}",
        "   5xx:              {r5xx}  (target 0: {v_5xx})",
    ],
}


def emit(st, lines, v):
    """Prints (and keeps in the summary) the template lines filled in with V; a line that
    comes out empty is left out."""
    for t in lines:
        line = t.format(**v)
        if line:
            st.sum(line)


def cmd_ratelimit(a):
    """One part of ratelimit.sh, from DIR: before-/after-GW.metrics, before/after.redis,
    wrk-GW.txt; facts: rate per burst threads conns seconds t0 t1."""
    st, f = State(), facts(a.facts)
    path = lambda name: os.path.join(a.dir, name)
    gws = sorted(os.path.basename(p)[len("before-"):-len(".metrics")] for p in glob.glob(path("before-*.metrics")))
    v = {k: 0 for k, _ in RATELIMIT_FIGURES}
    per_gw, wait_s, rtts = [], 0.0, []
    for g in gws:
        m0, m1 = Metrics.file(path("before-%s.metrics" % g)), Metrics.file(path("after-%s.metrics" % g))
        wait_s += (m1.msum("gateway_ratelimit_lease_wait_seconds_sum") or 0) - (
            m0.msum("gateway_ratelimit_lease_wait_seconds_sum") or 0)
        rtts.append(m1.msum("gateway_ratelimit_redis_round_trip_seconds") or 0)
        d = {k: round(m1.msum(sel) or 0) - round(m0.msum(sel) or 0) for k, sel in RATELIMIT_FIGURES}
        v = {k: v[k] + d[k] for k in v}
        per_gw.append("%s %d" % (g, d["allowed"]))
    w = [Wrk.file(path("wrk-%s.txt" % g)) for g in gws]
    elapsed = round(float(f["t1"]) - float(f["t0"]), 3)
    rate, burst, allowed = int(f["rate"]), int(f["burst"]), v["allowed"]
    allowed_max = burst + rate * elapsed
    evalsha = redis_evalsha(read(path("after.redis"))) - redis_evalsha(read(path("before.redis")))
    v.update(RATELIMIT_TARGETS, n=len(gws), rate=rate, burst=burst, per=f["per"], evalsha=evalsha,
             wrk="wrk -t%s -c%s -d%ss" % (f["threads"], f["conns"], f["seconds"]),
             reqs=sum(x.requests for x in w if x.requests is not None), rps=w[0].rps_text,
             non2xx=sum(x.non2xx for x in w), sockerr=sum(x.sockerr for x in w), elapsed="%.3f" % elapsed,
             allowed_max="%.0f" % allowed_max, exact="%.4f" % (allowed / allowed_max),
             admitted_per_s="%.1f" % (allowed / elapsed), per_gateway=", ".join(per_gw),
             per_eval="%.4f" % (evalsha / allowed if allowed > 0 else -1),
             per_trip="%.4f" % (v["trips"] / allowed if allowed > 0 else -1),
             delay_ms=f.get("delay_ms", "0"), kill_at=f.get("kill_at", "-"),
             restart_after=f.get("restart_after", "-"),
             exact_200="%.4f" % (v["r200"] / allowed_max),
             wait_pct="%.3f" % (100.0 * v["waits"] / max(v["requests"], 1)),
             wait_mean=fmt(1000 * wait_s / v["waits"] if v["waits"] else None, ".1f"),
             rtt=fmt(1000 * max(rtts) if rtts else None, ".1f"),
             p50=fmt(max((x.p50 for x in w if x.p50 is not None), default=None), ".3f"),
             p99=fmt(max((x.p99 for x in w if x.p99 is not None), default=None), ".3f"))
    for label, key, test in RATELIMIT_VERDICTS[a.part]:
        v[key] = st.verdict(test(v, RATELIMIT_TARGETS), label)
    emit(st, RATELIMIT_LINES[a.part], v)


def cmd_relay(a):
    """A TCP relay on 127.0.0.1:PORT to 127.0.0.1:TARGET that delays every byte by DELAY_MS
    in each direction (order kept): a Redis in another zone. Writes READY when listening."""
    delay = a.delay_ms / 1000.0

    async def pump(reader, writer):
        queue = asyncio.Queue()

        async def send():
            loop = asyncio.get_running_loop()
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((asyncio.get_running_loop().time() + delay, data or None))
                if not data:
                    break
        except OSError:
            await queue.put((0, None))
        await sender

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", a.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w), return_exceptions=True)

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", a.port)
        with open(a.ready, "w") as f:
            f.write("ready\n")
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# ==================================================================== regions.sh
def resp_command(port, *args, timeout=1.0):
    """One Redis command on 127.0.0.1:PORT (RESP, stdlib only) -> its reply: bytes, int,
    list or None; raises OSError when Redis cannot be reached."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = b"*%d\r\n" % len(args)
        for x in args:
            x = x if isinstance(x, bytes) else str(x).encode()
            out += b"$%d\r\n%s\r\n" % (len(x), x)
        s.sendall(out)
        with s.makefile("rb") as f:
            def reply():
                line = f.readline()
                if not line:
                    raise OSError("connection closed")
                kind, rest = line[:1], line[1:-2]
                if kind == b"+":
                    return rest
                if kind == b"-":
                    raise OSError(rest.decode(errors="replace"))
                if kind == b":":
                    return int(rest)
                if kind == b"$":
                    n = int(rest)
                    return None if n < 0 else f.read(n + 2)[:-2]
                if kind == b"*":
                    n = int(rest)
                    return None if n < 0 else [reply() for _ in range(n)]
                raise OSError("bad reply " + repr(line))
            return reply()


def rights_of(port, key):
    """A region's rights hash for KEY: {field: int} ({} when absent), None when that
    Redis cannot be read."""
    try:
        flat = resp_command(port, "HGETALL", key) or []
    except OSError:
        return None
    out = {}
    for f, v in zip(flat[::2], flat[1::2]):
        try:
            out[f.decode()] = int(v)
        except ValueError:
            pass
    return out


def cmd_shares(a):
    """Samples every region's rights hash of KEY every INTERVAL s into OUT (TSV: unix time,
    region index, share or NA, the give counters as from:to=units,...) until terminated."""
    on_term()
    ports = [int(p) for p in a.ports.split(",")]
    with open(a.out, "w") as out:
        for _ in paced(a.interval):
            now = time.time()
            for i, port in enumerate(ports):
                r = rights_of(port, a.key)
                share = "NA" if r is None or "share" not in r else r["share"]
                gives = "" if r is None else ",".join(
                    "%s=%d" % (k[2:], v) for k, v in sorted(r.items()) if k.startswith("g:"))
                out.write("%.3f\t%d\t%s\t%s\n" % (now, i, share, gives))
            out.flush()


def share_samples(path):
    """cmd_shares' TSV -> [(t, {region: (share or None, gives)})], one entry per sample time."""
    rows = {}
    for line in read(path).splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        t, region, share, gives = float(parts[0]), int(parts[1]), parts[2], parts[3]
        rows.setdefault(t, {})[region] = (None if share == "NA" else int(share), gives)
    return sorted(rows.items())


def first_time(samples, since, test):
    """Seconds from SINCE to the first sample at or after it that passes TEST, or None."""
    for t, regions in samples:
        if t >= since and test(regions):
            return t - since
    return None


# The counters of a regions.sh part, per gateway (deltas of /metrics): key, selector.
REGIONS_FIGURES = [
    ("admitted", 'gateway_requests_total{status="200"}'),
    ("limited", 'gateway_requests_total{status="429"}'),
    ("r5xx", 'gateway_requests_total{status="5.."}'),
    ("fallback", 'gateway_ratelimit_decisions_total{outcome="fallback"}'),
    ("bytes", "gateway_ratelimit_region_bytes_total"),
    ("rounds_ok", 'gateway_ratelimit_region_reads_total{outcome="ok"}'),
    ("gives", "gateway_ratelimit_region_gives_total"),
    ("leases", "gateway_ratelimit_redis_round_trips_total"),
]
REGIONS_TARGETS = {"exact_max": 1.00, "one_min": 0.90, "per_admitted_max": 0.05, "converge_max_rounds": 2}


def cmd_regions(a):
    """One part of regions.sh, from DIR: before-/after-/mid0-/mid1-R.metrics per region R
    (one gateway each), shares.tsv; facts: scenario rate burst regions interval_ms t0 t1
    [mid0 mid1] [cut0 cut1] [kill]."""
    st, f = State(), facts(a.facts)
    path = lambda name: os.path.join(a.dir, name)
    n, rate, burst = int(f["regions"]), float(f["rate"]), float(f["burst"])
    t0, t1, interval = float(f["t0"]), float(f["t1"]), float(f["interval_ms"]) / 1000
    per = []
    for r in range(n):
        m0, m1 = Metrics.file(path("before-%d.metrics" % r)), Metrics.file(path("after-%d.metrics" % r))
        d = {k: (m1.msum(sel) or 0) - (m0.msum(sel) or 0) for k, sel in REGIONS_FIGURES}
        per.append(d)
    # Commands each region's Redis got from every gateway (a script counts as one; INFO's
    # commandstats counts the commands inside scripts too).
    for r, d in enumerate(per):
        sel = 'gateway_ratelimit_redis_commands_total{region="r%d"}' % r
        d["calls"] = sum((Metrics.file(path("after-%d.metrics" % g)).msum(sel) or 0)
                         - (Metrics.file(path("before-%d.metrics" % g)).msum(sel) or 0) for g in range(n))
    admitted = sum(d["admitted"] for d in per)
    elapsed = t1 - t0
    allowed = burst + rate * elapsed
    scenario = f["scenario"]
    exact = admitted / allowed
    st.sum("## %s: %d regions, %g/s burst %g, %.2f s: admitted %d of %.0f allowed = %.4f (target <= %.2f): %s" % (
        scenario, n, rate, burst, elapsed, admitted, allowed, exact, REGIONS_TARGETS["exact_max"],
        st.verdict(exact <= REGIONS_TARGETS["exact_max"], scenario + ":exact")))
    for r, d in enumerate(per):
        bytes_per = d["bytes"] / d["rounds_ok"] if d["rounds_ok"] else None
        per_admitted = ratio(d["calls"], d["admitted"], ".4f")
        economy = "" if not scenario.startswith("economy") or not d["admitted"] else " (target < %.2f: %s)" % (
            REGIONS_TARGETS["per_admitted_max"], st.verdict(
                d["admitted"] > 0 and d["calls"] / d["admitted"] < REGIONS_TARGETS["per_admitted_max"],
                "%s:region%d" % (scenario, r)))
        # Lease round trips (one key: one EVALSHA each) go to the gateway's own region.
        st.sum("   region %d: admitted %d, 429 %d, 5xx %d, fallback decisions %d, gives %d, Redis commands %s "
               "= %s per admitted%s (leases %s, replication %s), replication %s bytes per key per round "
               "(%d rounds)" % (
                   r, d["admitted"], d["limited"], d["r5xx"], d["fallback"], d["gives"], awk_num(d["calls"]),
                   per_admitted, economy, ratio(d["leases"], d["admitted"], ".4f"),
                   ratio(d["calls"] - d["leases"], d["admitted"], ".4f"), fmt(bytes_per, ".0f"),
                   d["rounds_ok"]))
    samples = share_samples(path("shares.tsv"))
    if scenario == "one":
        # The second half of the run: how much of the limit the one busy region gets.
        h0, h1 = Metrics.file(path("mid0-0.metrics")), Metrics.file(path("mid1-0.metrics"))
        sel = REGIONS_FIGURES[0][1]
        half = ((h1.msum(sel) or 0) - (h0.msum(sel) or 0)) / (float(f["mid1"]) - float(f["mid0"])) / rate
        took = first_time(samples, t0, lambda rs: (rs.get(0, (None,))[0] or 0) >= 900000)
        st.sum("   the busy region's share reached 0.9 after %s s (%s rounds); admitted rate in the second half "
               "%.3f of the limit (target >= %.2f): %s" % (
                   fmt(took, ".2f"), fmt(took / interval if took is not None else None, ".1f"), half,
                   REGIONS_TARGETS["one_min"], st.verdict(half >= REGIONS_TARGETS["one_min"], "one:share")))
    if "cut0" in f:
        c0, c1 = float(f["cut0"]), float(f["cut1"])
        cut = sum((Metrics.file(path("mid1-%d.metrics" % r)).msum(REGIONS_FIGURES[0][1]) or 0)
                  - (Metrics.file(path("mid0-%d.metrics" % r)).msum(REGIONS_FIGURES[0][1]) or 0) for r in range(n))
        cut_allowed = burst + rate * (c1 - c0)
        same = lambda rs: len({g for _, g in rs.values()}) == 1 and all(s is not None for s, _ in rs.values())
        took = first_time(samples, c1, same)
        st.sum("   during the cut (%.2f s): admitted %d of %.0f allowed = %.4f (target <= 1.00): %s; after the heal "
               "every region holds the same counters after %s s = %s rounds (target <= %d): %s" % (
                   c1 - c0, cut, cut_allowed, cut / cut_allowed,
                   st.verdict(cut <= cut_allowed, "cut:exact"), fmt(took, ".2f"),
                   fmt(took / interval if took is not None else None, ".1f"), REGIONS_TARGETS["converge_max_rounds"],
                   st.verdict(took is not None and took / interval <= REGIONS_TARGETS["converge_max_rounds"],
                              "cut:converge")))


# ==================================================================== breaker.sh
STATE_NAMES = {0: "closed", 1: "open", 2: "half"}


def breaker_snapshot(text):
    """/metrics -> {"status": {code: n} (route app), "state": {backend: v}, "short": n,
    "trans": {"backend from->to": n}}"""
    out = {"status": {}, "state": {}, "short": 0, "trans": {}}
    for name, labels, v in parse_metrics(text):
        if name == "gateway_requests_total" and labels.get("route") == "app":
            s = labels.get("status", "?")
            out["status"][s] = out["status"].get(s, 0) + int(v)
        elif name == "gateway_breaker_state":
            out["state"][labels.get("backend", "?")] = int(v)
        elif name == "gateway_breaker_short_circuited_total":
            out["short"] += int(v)
        elif name == "gateway_breaker_transitions_total":
            k = "%s %s->%s" % (labels.get("backend", "?"), labels.get("from", "?"), labels.get("to", "?"))
            out["trans"][k] = out["trans"].get(k, 0) + int(v)
    return out


def fetch_metrics(admin, timeout=2.0):
    host, port = admin.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        if r.status != 200:
            raise OSError("/metrics answered %d" % r.status)
        return body
    finally:
        c.close()


def transitions(snap, up1, up2):
    names = {up1: "up1", up2: "up2"}
    return ", ".join("%s %s:%d" % (names.get(k.split(" ")[0], k.split(" ")[0]), k.split(" ", 1)[1], v)
                     for k, v in sorted(snap["trans"].items())) or "none"


def timeline(samples_path, kill_wall, b1, b2):
    """Per-second responses by status around the kill, from the samples' counters."""
    rows = []
    for line in read(samples_path).splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    if len(rows) < 2:
        return ["   (not enough /metrics samples for a timeline)"]
    bins = {}
    for prev, cur in zip(rows, rows[1:]):
        b = bins.setdefault(math.floor(cur["t"] - kill_wall), {"status": {}, "state": None})
        for s, v in cur["status"].items():
            b["status"][s] = b["status"].get(s, 0) + v - prev["status"].get(s, 0)
        b["state"] = cur["state"]
    codes = sorted({s for b in bins.values() for s in b["status"]} - {"200"})
    # The gateway counts a request it wrote no response to (the client went away) as
    # status "0": shown as "none".
    out = ["   %-12s %8s %8s" % ("s from kill", "200", "non-200") + "".join(
        " %6s" % ("none" if c == "0" else c) for c in codes) + "   breaker up1/up2 at end"]
    for k in sorted(bins):
        b, st = bins[k], bins[k]["state"] or {}
        out.append("   %-12s %8d %8d" % ("[%+d,%+d)" % (k, k + 1), b["status"].get("200", 0),
                                          sum(v for s, v in b["status"].items() if s != "200"))
                   + "".join(" %6d" % b["status"].get(c, 0) for c in codes)
                   + "   %s/%s" % (STATE_NAMES.get(st.get(b1), "?"), STATE_NAMES.get(st.get(b2), "?")))
    return out


def killwatch_result(path):
    """The killwatch probe's "k=v ..." line (open_ms NA when it printed none)."""
    k = dict(w.split("=", 1) for w in read(path).split() if "=" in w)
    if "open_ms" not in k:
        print("   killwatch failed: " + read(path).strip(), file=sys.stderr)
        k["open_ms"] = "NA"
    return k


BREAKER_TARGETS = {"alldown_p99_max_ms": 1, "alldown_connects_max": 0}
BREAKER_VERDICTS = {  # label, key of its ok/MISSED, test (values v, targets T)
    "all-down": [
        ("alldown-p99", "v_p99", lambda v, T: v["p99"] != "NA" and float(v["p99"]) < T["alldown_p99_max_ms"]),
        ("alldown-connects", "v_connects", lambda v, T: "NA" not in (v["c1"], v["c2"])
         and int(v["c1"]) + int(v["c2"]) <= T["alldown_connects_max"]),
    ],
}
# Each scenario's summary lines, filled in with the values of cmd_breaker, the settings
# and the targets; a line that comes out empty is left out.
KILL_OPEN = ("kill -> breaker of upstream 2 open (/metrics polled every 10 ms{load}): {open_ms} ms  (opened between "
             "{after_ms} and {open_ms} ms; {polls} polls, slowest {max_poll_ms} ms")
BREAKER_LINES = {
    "one-dies": [
        "## one of two dies, route retries: {retries}, passive breaker only (consecutive_failures {consecutive_failures}, "
        "open_duration {open_duration}), {wrk} --latency, 3 x {phase_s}s",
        "{phases}",
        "   " + KILL_OPEN.replace("{load}", " under load") + ")",
        "   gateway counters over the 3 phases: 200 {s200}, 502 {s502}, 503 {s503}, 504 {s504}, no response (client gone, "
        'label status="0") {s0}; short-circuited (503 at once) {short}',
        "   breaker transitions: {transitions}",
        "{timeline}",
    ],
    "hc": [
        "## one of two dies, active health check ({hc}), no traffic",
        "   " + KILL_OPEN.replace("{load}", "")
        + "; expected: {hc_min} to {hc_unhealthy} check intervals of {hc_interval})",
        "   afterwards: gateway_upstream_healthy of upstream 2 = {up2_healthy}; transitions: {transitions}",
    ],
    "all-down": [
        "## all down (both upstreams dead, breakers open, open_duration {alldown_open}, no health check), {wrk} "
        "-d{alldown_duration_s}s --latency",
        "   breakers tripped by {n} request(s) (statuses: {statuses}); states after the run: up1 {st1}, up2 {st2} "
        "(1 = open)",
        "   responses:   {requests} requests, {rps} req/s; wrk non-2xx {non2xx}, socket errors {sockerr}",
        "   by gateway:  503 {s503} (short-circuited {short}), 200 {s200}, other statuses {other}",
        "   503 latency: p50 {p50} ms, p99 {p99} ms  (target p99 < {alldown_p99_max_ms} ms: {v_p99})",
        "   connections accepted on the dead upstreams' ports during the run: up1 {c1}, up2 {c2}  (target "
        "{alldown_connects_max}: {v_connects})",
        "{control}",
    ],
}


def wrk_values(w, prefix=""):
    return {prefix + "rps": fmt(w.rps, ".0f"), prefix + "p50": fmt(w.p50, ".3f"), prefix + "p99": fmt(w.p99, ".3f"),
            prefix + "non2xx": w.non2xx, prefix + "sockerr": w.sockerr, prefix + "requests": awk_num(w.requests)}


def cmd_breaker(a):
    """One breaker.sh scenario, from $TMP/NAME-*: wrk outputs, snap0/snap1.metrics,
    killwatch.txt, samples.jsonl, trip.txt, listen*.out; facts: up1 up2 (backends)."""
    st, f = State(), facts(a.facts)
    p = lambda *n: st.path(a.name + "-" + "".join(n))
    up1, up2 = f["up1"], f["up2"]
    s0, s1 = (breaker_snapshot(read(p("snap%d.metrics" % i))) for i in (0, 1))
    v = dict(st.settings, **BREAKER_TARGETS, **f, transitions=transitions(s1, up1, up2), short=s1["short"] - s0["short"])
    v["wrk"] = "wrk -t%s -c%s" % (v["wrk_threads"], v["connections"])
    for code in ("0", "200", "502", "503", "504"):
        v["s" + code] = s1["status"].get(code, 0) - s0["status"].get(code, 0)
    if a.scenario in ("one-dies", "hc"):
        v.update(killwatch_result(p("killwatch.txt")))
    if a.scenario == "one-dies":
        v["phases"] = "\n".join([row_head(7)] + [Wrk.file(p("wrk-%s.txt" % ph)).row(ph, 7)
                                                 for ph in ("BEFORE", "DURING", "AFTER")])
        v["timeline"] = "" if "kill_wall" not in v else "\n".join(
            ["   per-second responses (gateway_requests_total, sampled every %ss; second 0 starts at the kill):"
             % v["sample_interval_s"]] + timeline(p("samples.jsonl"), float(v["kill_wall"]), up1, up2))
    elif a.scenario == "hc":
        v.update(hc="interval {hc_interval}, timeout {hc_timeout}, unhealthy_threshold {hc_unhealthy}".format(**v),
                 hc_min=int(v["hc_unhealthy"]) - 1, up2_healthy=awk_num(Metrics.file(p("snap1.metrics")).get(
                     'gateway_upstream_healthy{backend="%s"}' % re.escape(up2))))
    else:
        v.update(read_kv(p("trip.txt")), **wrk_values(Wrk.file(p("wrk.txt"))), st1=awk_num(s1["state"].get(up1)),
                 st2=awk_num(s1["state"].get(up2)), c1=read_kv(p("listen1.out")).get("accepted", "NA"),
                 c2=read_kv(p("listen2.out")).get("accepted", "NA"),
                 other=sum(s1["status"].values()) - sum(s0["status"].values()) - v["s503"])
        if "NA" in (v["c1"], v["c2"]):
            print("   a counting listener printed no count: %s%s" % (read(p("listen1.out")), read(p("listen2.out"))),
                  file=sys.stderr)
        v["control"] = "" if not os.path.exists(p("wrk-ping.txt")) else (
            "   control, same wrk on GET /ping (200 from the gateway itself, after the run above): {rps} req/s, "
            "p50 {p50} ms, p99 {p99} ms, non-2xx {non2xx}, socket errors {sockerr}"
            .format(**wrk_values(Wrk.file(p("wrk-ping.txt")))))
    for label, key, test in BREAKER_VERDICTS.get(a.scenario, []):
        v[key] = st.verdict(test(v, BREAKER_TARGETS), label)
    emit(st, BREAKER_LINES[a.scenario], v)


# ---- breaker.sh's probes
STOP = False


def _stop(*_):
    global STOP
    STOP = True


def on_term():
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def paced(interval):
    """Yields every INTERVAL s (skipping missed ticks) until SIGTERM."""
    nxt = time.monotonic()
    while not STOP:
        yield
        nxt += interval
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()


def cmd_sample_metrics(a):
    """Appends a breaker snapshot of ADMIN's /metrics (one JSON line) to OUT every
    INTERVAL s until SIGTERM."""
    on_term()
    with open(a.out, "a") as f:
        for _ in paced(a.interval):
            try:
                snap = breaker_snapshot(fetch_metrics(a.admin))
                snap["t"] = time.time()
                f.write(json.dumps(snap) + "\n")
                f.flush()
            except OSError:
                pass


def cmd_state(a):
    """gateway_breaker_state of BACKEND (0 closed, 1 open, 2 half-open), or NA."""
    try:
        print(breaker_snapshot(fetch_metrics(a.admin))["state"].get(a.backend, "NA"))
    except OSError:
        print("NA")


def cmd_killwatch(a):
    """SIGKILLs the PIDs, then polls /metrics every 10 ms until BACKEND's breaker is open;
    prints "open_ms=<ms|NA> after_ms=<ms> kill_wall=<s> polls=<n> max_poll_ms=<ms>
    first_poll_after_ms=<ms>": it opened between after_ms and open_ms."""
    kill_wall, t0 = time.time(), time.monotonic()
    for p in a.pids:
        try:
            os.kill(int(p), signal.SIGKILL)
        except ProcessLookupError:
            pass
    polls, max_poll, first_after, open_ms = 0, 0.0, None, None
    closed_seen = 0.0  # start of the last poll that still saw it not open (ms after the kill)
    for _ in paced(0.010):
        if time.monotonic() - t0 >= a.timeout:
            break
        x = time.monotonic()
        try:
            state = breaker_snapshot(fetch_metrics(a.admin, timeout=1.0))["state"].get(a.backend)
        except OSError:
            state = None
        y = time.monotonic()
        polls += 1
        max_poll = max(max_poll, (y - x) * 1000)
        if first_after is None:
            first_after = (y - t0) * 1000
        if state == 1:
            open_ms = (y - t0) * 1000  # it was 1 when the gateway built the answer: between x and y
            break
        closed_seen = (x - t0) * 1000
    print("open_ms=%s after_ms=%.1f kill_wall=%.6f polls=%d max_poll_ms=%.1f first_poll_after_ms=%.1f" % (
        fmt(open_ms, ".1f"), closed_seen, kill_wall, polls, max_poll, first_after or 0))


def cmd_listen(a):
    """Accepts and counts TCP connections on 127.0.0.1:PORT until SIGTERM, then prints
    "accepted=<n>"."""
    on_term()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", a.port))
    s.listen(1024)
    s.settimeout(0.05)
    with open(a.ready, "w") as f:
        f.write("ready\n")
    n = 0
    while not STOP:
        try:
            c, _ = s.accept()
        except (socket.timeout, InterruptedError):
            continue
        n += 1
        c.close()
    s.setblocking(False)  # connections completed by the kernel but not yet accepted count too
    while True:
        try:
            c, _ = s.accept()
        except OSError:
            break
        n += 1
        c.close()
    print("accepted=%d" % n, flush=True)


def cmd_trip(a):
    """GETs URL until both backends' breakers are open (at most MAX requests); writes
    n= statuses= to OUT; fails when they did not both open."""
    codes, states = [], (None, None)
    host, port = a.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    for _ in range(a.max + 1):
        try:
            snap = breaker_snapshot(fetch_metrics(a.admin))["state"]
            states = (snap.get(a.b1), snap.get(a.b2))
        except OSError:
            states = (None, None)
        if states == (1, 1) or len(codes) == a.max:
            break
        c = http.client.HTTPConnection(host, int(port), timeout=3)
        try:
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            codes.append(str(r.status))
        except OSError:
            codes.append("000")
        finally:
            c.close()
    with open(a.out, "w") as f:
        f.write("n=%d\nstatuses=%s\n" % (len(codes), " ".join(codes)))
    if states != (1, 1):
        sys.exit("breakers not both open after %d requests (states %s/%s)" % (len(codes), *map(awk_num, states)))
    print("   both breakers open after %d request(s) (statuses: %s)" % (len(codes), " ".join(codes)))


# ==================================================================== slowloris.sh
TSV_HEAD = ["idx", "connect_wall", "closed_after_s", "how", "status", "header_bytes_sent"]


def seconds(duration):
    """'5s' or '500ms' -> seconds (5 or 0.5)."""
    m = re.fullmatch(r"(\d+)(ms|s)", duration)
    return int(m.group(1)) if m.group(2) == "s" else int(m.group(1)) / 1000


def tally(tsv):
    """The slow connections' records -> their fate: counts, statuses, close times."""
    conns = [dict(zip(TSV_HEAD, l.split("\t"))) for l in read(tsv).splitlines()[1:]]
    closed = [c for c in conns if c["closed_after_s"] != "NA"]
    times = sorted(float(c["closed_after_s"]) for c in closed)
    walls = [float(c["connect_wall"]) + float(c["closed_after_s"]) for c in closed]
    statuses = {}
    for c in closed:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    f3 = lambda v: fmt(v, ".3f")
    return {
        "closed": len(closed), "eof": sum(c["how"] == "eof" for c in closed),
        "reset": sum(c["how"] == "reset" for c in closed), "got408": statuses.get("408", 0),
        "statuses": ",".join("%s:%d" % kv for kv in sorted(statuses.items())) or "-",
        "still": len(conns) - len(closed),
        "cmin": f3(times[0] if times else None), "cmed": f3(median(times)),
        "cp90": f3(times[min(len(times) - 1, int(0.9 * len(times)))] if times else None),
        "cmax": f3(times[-1] if times else None),
        "sent": max((int(c["header_bytes_sent"]) for c in conns), default=0),
        "first_close": min(walls) if walls else None, "last_close": max(walls) if walls else None,
    }


def samples_summary(path, t0, col):
    """The connection samples ("wall gauge established") relative to the attack's start t0,
    of column COL (1 gauge, 2 established): before (the last sample before t0), peak (the
    highest from t0 on) and its time, after (the last), and a per-second timeline of the
    highest sample since t0."""
    key = lambda x: -1 if num(x) is None else num(x)
    before, peak, peak_t, after, per_s = "NA", None, 0.0, "NA", {}
    for r in (l.split() for l in read(path).splitlines()):
        if len(r) != 3:
            continue
        t, v = float(r[0]), r[col]
        if t < t0:
            before = v
            continue
        if peak is None or key(v) > key(peak):
            peak, peak_t = v, t - t0
        after = v
        s = int(t - t0)
        if s not in per_s or max(key(v), 0) > max(key(per_s[s]), 0):
            per_s[s] = v
    line = " ".join("%ds:%s" % (s, per_s.get(s, "-")) for s in range(max(per_s, default=0) + 1))
    return {"before": before, "peak": peak or "NA", "peak_t": "%.1f" % peak_t, "after": after, "per_s": line}


SLOWLORIS_TITLES = {
    "gateway": "gateway (server.client_header_timeout {header_timeout})",
    "nginx": "nginx control (reverse proxy, 2 workers, client_header_timeout {header_timeout})",
}
# The verdicts (a target with /metrics only, i.e. the gateway): label, key of its
# ok/MISSED, test (the values v).
SLOWLORIS_VERDICTS = [
    ("slow-opened", "v_open", lambda v: v["opened"] == v["slow"]),
    ("slow-all-closed", "v_closed", lambda v: str(v["closed"]) == v["opened"] and v["still"] == 0),
    ("slow-all-408", "v_408", lambda v: str(v["got408"]) == v["opened"]),
    ("close-at-deadline", "v_time", lambda v: v["cmin"] != "NA" and float(v["cmin"]) >= v["ht_s"] - float(v["early_slack_s"])
     and float(v["cmax"]) <= v["ht_s"] + float(v["close_slack_s"])),
    ("metrics-count", "v_metric", lambda v: v["d_ht"] == v["opened"] and v["d_rf"] == "0"),
    ("gauge-back", "v_after", lambda v: v["g_after"] != "NA" and v["g_after"] == v["g_before"]),
    ("normal-requests-ok", "v_wrk", lambda v: v["a_non2xx"] == 0 and v["a_sockerr"] == 0 and v["a_rps"] != "NA"),
]
# A target's summary lines, filled in with the values of cmd_slowloris and the settings:
# every target's, then the gateway's (with /metrics) or the control's.
SLOWLORIS_LINES = [
    "## {title}: {slow} slow connections, one header byte every {trickle_s}s; wrk -t{wrk_threads} -c{connections} "
    "-d{duration_s}s --latency",
    "{phases}",
    "   attack / baseline: req/s {r_rps}, p50 {r_p50}, p99 {r_p99}",
    "   CPU of {name} during each wrk run (user + system, workers included): baseline {cpu_b:.2f} s, attack {cpu_a:.2f} s "
    "({us_b} vs {us_a} us/request); the slowloris helper used {cpu_s} s over the attack (on the same cores)",
    "   timing (s after the first slow connect): all {opened} open at {opened_at}, wrk ran {w0} - {w1}, server closes "
    "{closes}; of wrk's {duration_s}s, {ov_all} s with all of them open, {ov_some} s with some",
    "   slow connections: opened {opened} of {slow} (connect failures {connect_failed}: {connect_errors}), closed by the "
    "server {closed} (EOF {eof}, reset {reset}), answers by status: {statuses}, 408s {got408}, still open at the "
    "{attack_bound_s}s bound {still}; at most {sent} header bytes sent on one",
    "   close time after connect: min {cmin} s, median {cmed} s, p90 {cp90} s, max {cmax} s  (configured deadline "
    "{header_timeout} = {ht} s)",
]
ESTABLISHED = ("   established TCP connections on its port (/proc/net/tcp): before {e_before}, peak {e_peak} "
               "({e_peak_t} s), after {e_after}")
SLOWLORIS_GATEWAY_LINES = [
    "   gateway_downstream_connections: before {g_before}, peak {g_peak} ({g_peak_t} s), after {g_after}; over the attack: "
    'gateway_downstream_closed_total{{reason="header_timeout"}} +{d_ht}, gateway_downstream_refused_total +{d_rf}, '
    'gateway_requests_total{{status="408"}} +{d_408}',
    "   gateway_downstream_connections per second since the first slow connect (highest sample): {g_per_s}",
    ESTABLISHED,
    "   targets: all {slow} opened: {v_open}; all closed by the server: {v_closed}; all answered 408: {v_408}; closed "
    "within [deadline - {early_slack_s} s, deadline + {close_slack_s} s]: {v_time}; header_timeout closes = opened and "
    "0 refused: {v_metric}; gauge back to before: {v_after}; wrk during the attack without errors: {v_wrk}",
]
SLOWLORIS_CONTROL_LINES = [
    ESTABLISHED,
    "   established TCP connections per second since the first slow connect (highest sample): {e_per_s}",
]


def cmd_slowloris(a):
    """One slowloris.sh target, from $TMP/NAME-*: wrk-{baseline,attack}.txt and .kv (cpu0
    cpu1 in clock ticks, wall0 wall1), attack.txt, attack.ready, slow-connections.tsv,
    samples.txt and, for a gateway, {before,after}.metrics."""
    st = State()
    p = lambda n: st.path(a.name + "-" + n)
    v = dict(st.settings, name=a.name, **tally(p("slow-connections.tsv")))
    v.update(title=SLOWLORIS_TITLES.get(a.name, a.name).format(**v), ht_s=seconds(v["header_timeout"]))
    v["ht"] = "%.3f" % v["ht_s"] if v["header_timeout"].endswith("ms") else v["ht_s"]
    base, during = Wrk.file(p("wrk-baseline.txt")), Wrk.file(p("wrk-attack.txt"))
    v.update(**wrk_values(during, "a_"), phases="\n".join([row_head(), base.row("baseline"), during.row("attack")]),
             r_rps=ratio(during.rps, base.rps), r_p50=ratio(during.p50, base.p50), r_p99=ratio(during.p99, base.p99))
    atk = dict({"opened": "NA", "connect_failed": "NA", "connect_errors": "NA", "cpu_s": "NA", "end_wall": "NA"},
               **read_kv(p("attack.txt")))
    if "start_wall" not in atk:
        print("   the slowloris helper printed no results: " + read(p("attack.txt")), file=sys.stderr)
        atk["start_wall"] = atk["opened_wall"] = read_kv(p("attack.ready")).get("opened_wall", "0")
    v.update(atk)
    t0 = float(atk["start_wall"])
    for k, w, phase in (("b", base, "baseline"), ("a", during, "attack")):
        kv = read_kv(p("wrk-%s.kv" % phase))
        v["cpu_" + k] = (int(kv["cpu1"]) - int(kv["cpu0"])) / os.sysconf("SC_CLK_TCK")
        v["us_" + k] = ratio(v["cpu_" + k] * 1e6, w.requests, ".1f")
        v["wall0_" + k], v["wall1_" + k] = float(kv["wall0"]), float(kv["wall1"])
    wrk_start, wrk_end, end_wall = v["wall0_a"], v["wall1_a"], num(atk["end_wall"])

    def overlap(until):  # how long wrk ran while the slow connections were open (until UNTIL)
        return "NA" if until is None else "%.1f" % max(0.0, min(until, wrk_end) - wrk_start)
    first, last = v["first_close"], v["last_close"]
    v.update(opened_at="%.2f" % (float(atk["opened_wall"]) - t0), w0="%.1f" % (wrk_start - t0),
             w1="%.1f" % (wrk_end - t0), closes="none" if first is None else "%.2f - %.2f" % (first - t0, last - t0),
             ov_all=overlap(first if first is not None else end_wall), ov_some=overlap(end_wall if v["still"] else last))
    v.update({"e_" + k: x for k, x in samples_summary(p("samples.txt"), t0, 2).items()})
    emit(st, SLOWLORIS_LINES, v)
    if not os.path.exists(p("before.metrics")):
        emit(st, SLOWLORIS_CONTROL_LINES, v)
        return
    m0, m1 = Metrics.file(p("before.metrics")), Metrics.file(p("after.metrics"))
    for k, sel in (("d_ht", 'gateway_downstream_closed_total{reason="header_timeout"}'),
                   ("d_rf", "gateway_downstream_refused_total"), ("d_408", 'gateway_requests_total{status="408"}')):
        x, y = m0.get(sel), m1.get(sel)
        v[k] = awk_num(None if x is None or y is None else y - x)
    v.update({"g_" + k: x for k, x in samples_summary(p("samples.txt"), t0, 1).items()})
    for label, key, test in SLOWLORIS_VERDICTS:
        v[key] = st.verdict(test(v), label)
    emit(st, SLOWLORIS_GATEWAY_LINES, v)


# ---- slowloris.sh's probes
PREFIX = b"GET / HTTP/1.1\r\nHost: x\r\n"
TRICKLE_NAME = b"X-Slowloris: "
KEEP_RESPONSE = 512  # bytes of each answer kept


class Conn:
    __slots__ = ("idx", "sock", "t0", "wall0", "sent", "resp", "closed_s", "how")

    def __init__(self, idx, sock, t0, wall0):
        self.idx, self.sock, self.t0, self.wall0 = idx, sock, t0, wall0
        self.sent, self.resp, self.closed_s, self.how = 0, bytearray(), None, "open"

    def status(self):
        parts = bytes(self.resp).split(b"\r\n", 1)[0].split(b" ")
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            return parts[1].decode()
        return "-" if not self.resp else "garbage"


def cmd_attack(a):
    """Opens N connections one after the other (giving up on the rest after OPEN_BOUND s),
    sends the request line and Host on each, writes READY, then one more header byte
    ("X-Slowloris: aaa...", never a line end) every TRICKLE s on every connection still
    open. Records when the server closed each (EOF, or a reset on a read or a write), in
    seconds after its connect, and the status it answered, one line each in TSV. Stops
    BOUND s after READY, closing what is still open. Prints key=value lines."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    sel, conns, errors, mono = selectors.DefaultSelector(), [], {}, time.monotonic
    start_wall, start = time.time(), mono()
    for i in range(a.n):
        if mono() - start > a.open_bound:
            errors["open_bound_passed"] = errors.get("open_bound_passed", 0) + a.n - i
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((a.host, a.port))
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
    with open(a.ready + ".tmp", "w") as f:
        f.write("opened=%d\nopened_wall=%.6f\n" % (len(conns), opened_wall))
    os.rename(a.ready + ".tmp", a.ready)
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

    end, next_tick = opened + a.bound, opened + a.trickle
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
                    c.sock.send(TRICKLE_NAME[c.sent:c.sent + 1] if c.sent < len(TRICKLE_NAME) else b"a")
                    c.sent += 1
                except BlockingIOError:
                    pass
                except OSError:  # the server is gone: keep whatever it answered first
                    read_into(c)
                    c.how = "reset"
                    close(c)
            while next_tick <= now:
                next_tick += a.trickle
    end_wall = time.time()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    for c in conns:
        if c.closed_s is None:
            sel.unregister(c.sock)
            c.sock.close()
    with open(a.tsv, "w") as f:
        f.write("\t".join(TSV_HEAD) + "\n")
        for c in conns:
            f.write("%d\t%.6f\t%s\t%s\t%s\t%d\n" % (c.idx, c.wall0, fmt(c.closed_s, ".4f"), c.how, c.status(),
                                                    len(PREFIX) + c.sent))
    out = {"asked": a.n, "opened": len(conns), "connect_failed": sum(errors.values()),
           "connect_errors": ",".join("%s:%d" % kv for kv in sorted(errors.items())) or "-",
           "open_s": "%.3f" % (opened - start), "start_wall": "%.6f" % start_wall,
           "opened_wall": "%.6f" % opened_wall, "end_wall": "%.6f" % end_wall,
           "cpu_s": "%.2f" % (ru.ru_utime + ru.ru_stime)}
    for k, v in out.items():
        print("%s=%s" % (k, v))


def established(port):
    """ESTABLISHED TCP connections whose local port is PORT. /proc/net/tcp comes in
    several reads, each resuming at an offset in a table that may have changed meanwhile:
    a socket can be listed twice, so distinct (local, remote) pairs are counted."""
    seen = set()
    with open("/proc/net/tcp", "rb", buffering=0) as f:
        data = f.read()
    for line in data.decode().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            seen.add((fields[1], fields[2]))
    return len(seen)


def cmd_sample_conns(a):
    """Every INTERVAL s for at most MAX s (or until SIGTERM): "wall gauge established",
    gauge = gateway_downstream_connections from ADMIN ("-": NA), one line each, flushed."""
    on_term()
    end = time.monotonic() + a.max_s
    with open(a.out, "w") as f:
        for _ in paced(a.interval):
            if time.monotonic() >= end:
                break
            gauge = None
            if a.admin != "-":
                try:
                    text = fetch_metrics("127.0.0.1:" + a.admin, timeout=1)
                    gauge = Metrics(text).get("gateway_downstream_connections")
                except OSError:
                    pass
            f.write("%.3f %s %d\n" % (time.time(), awk_num(gauge), established(a.port)))
            f.flush()


# ==================================================================== ab.sh
AB_RACES = "gateway_upstream_pool_reuse_races_total"
AB_HEAD = ["round", "build", "rps", "requests", "cpu_us_per_request", "race_log_lines", "race_metric"]


def cmd_ab_round(a):
    """One ab.sh run: its line, and a row of ab.tsv."""
    st, w = State(), Wrk.file(a.wrk)
    us = "%.1f" % ((a.ticks1 - a.ticks0) / os.sysconf("SC_CLK_TCK") * 1e6 / w.requests) if w.requests else "NA"
    lines = read(a.log).count("failed to acquire reusable stream")
    m = Metrics.file(a.metrics)  # (a build without the counter: none)
    races = m.get(AB_RACES) if m.has(AB_RACES) else None
    print("round %s %s: %s req/s, %s requests, %s us CPU/request, pool-race log lines %d, pool-race metric %s" % (
        a.round, a.build, w.rps_text, awk_num(w.requests), us, lines, "none" if races is None else awk_num(races)))
    path = st.path("ab.tsv")
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write("\t".join(AB_HEAD) + "\n")
        f.write("\t".join([a.round, a.build, w.rps_text, awk_num(w.requests), us, str(lines), awk_num(races)]) + "\n")


def cmd_ab_summary(a):
    """Medians per build over the rounds, and new / old."""
    rows = [dict(zip(AB_HEAD, l.split("\t"))) for l in read(State().path("ab.tsv")).splitlines()[1:]]
    med = {b: {k: median([num(r[k]) for r in rows if r["build"] == b]) for k in ("rps", "cpu_us_per_request")}
           for b in ("old", "new")}
    print("== medians over %d round(s): old %s req/s, %s us CPU/request; new %s req/s, %s us CPU/request; "
          "new/old: req/s %s, CPU/request %s" % (
              len(rows) // 2, fmt(med["old"]["rps"], ".0f"), fmt(med["old"]["cpu_us_per_request"], ".1f"),
              fmt(med["new"]["rps"], ".0f"), fmt(med["new"]["cpu_us_per_request"], ".1f"),
              ratio(med["new"]["rps"], med["old"]["rps"], ".3f"),
              ratio(med["new"]["cpu_us_per_request"], med["old"]["cpu_us_per_request"], ".3f")))


# ==================================================================== main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, fn, *args):
        p = sub.add_parser(name, help=(fn.__doc__ or "").split("\n")[0])
        for spec in args:
            flag, kw = (spec, {}) if isinstance(spec, str) else spec
            p.add_argument(flag, **kw)
        p.set_defaults(fn=fn)
    many = {"nargs": "*"}
    add("load", cmd_load, ("when", {"choices": ["start", "end"]}))
    add("begin", cmd_begin, "prefix", "title", "settings", ("--versions", {"default": ""}))
    add("finish", cmd_finish, ("--results-dir", {"required": True}), "--gateway-bin", ("--died", {"default": ""}),
        "--body", ("--verdict", {"action": "store_true"}), ("--machine-line", {"action": "store_true"}),
        ("--echo-summary", {"action": "store_true"}))
    add("wrk-line", cmd_wrk_line, ("--width", {"type": int, "default": 8}), "label", "file",
        ("rc", {"nargs": "?", "default": "0"}))
    add("metric", cmd_metric, "file", "selector")
    add("header", cmd_header, "file", "name")
    add("evalsha", cmd_evalsha, "file")
    add("kv", cmd_kv, "file", "key")
    add("sum", cmd_sum, "line")
    add("logs", cmd_logs, ("--top", {"type": int, "default": 4}), ("--strip-ids", {"action": "store_true"}),
        ("files", many))
    add("ports", cmd_ports, ("n", {"type": int}))
    add("jwt", cmd_jwt, ("alg", {"choices": ["HS256", "RS256"]}), "kid", ("exp", {"type": int}), "iss", "aud", "--key")
    cost = [("--cpu", {"nargs": 2, "metavar": ("BEFORE", "AFTER")}),
            ("--upstream-status", {"nargs": 2, "metavar": ("BEFORE", "AFTER")})]
    add("round", cmd_round, "round", "target", "file", "rc", *cost)
    add("oha-round", cmd_oha_round, "round", "target", "file", "rc", *cost)
    add("run-report", cmd_run_report, ("targets", {"nargs": "+"}))
    add("ratelimit", cmd_ratelimit, ("part", {"choices": ["a", "b", "c", "d", "e"]}), "dir", ("facts", many))
    add("relay", cmd_relay, ("port", {"type": int}), ("target", {"type": int}), ("delay_ms", {"type": float}), "ready")
    add("regions", cmd_regions, "dir", ("facts", many))
    add("shares", cmd_shares, "ports", "key", ("interval", {"type": float}), "out")
    add("breaker", cmd_breaker, ("scenario", {"choices": ["one-dies", "hc", "all-down"]}), "name", ("facts", many))
    add("sample-metrics", cmd_sample_metrics, "admin", "out", ("interval", {"type": float}))
    add("state", cmd_state, "admin", "backend")
    add("killwatch", cmd_killwatch, "admin", "backend", ("timeout", {"type": float}), ("pids", many))
    add("listen", cmd_listen, ("port", {"type": int}), "ready")
    add("trip", cmd_trip, "admin", "url", "b1", "b2", ("max", {"type": int}), "out")
    add("slowloris", cmd_slowloris, "name")
    add("attack", cmd_attack, "host", ("port", {"type": int}), ("n", {"type": int}), ("trickle", {"type": float}),
        ("bound", {"type": float}), ("open_bound", {"type": float}), "ready", "tsv")
    add("sample-conns", cmd_sample_conns, "admin", ("port", {"type": int}), ("interval", {"type": float}),
        ("max_s", {"type": float}), "out")
    add("ab-round", cmd_ab_round, "round", "build", "wrk", "log", "metrics", ("ticks0", {"type": int}),
        ("ticks1", {"type": int}))
    add("ab-summary", cmd_ab_summary)
    a = ap.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
