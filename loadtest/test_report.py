#!/usr/bin/env python3
"""Tests of report.py's parsers and tallies (stdlib unittest), on outputs captured from
real runs of the scripts, in fixtures/. Where the shell/awk version of a parser existed,
the expected values are what it printed for the same input (run-results-5-rounds.txt,
run-summary.tsv, slowloris-attack-old.txt, and the lines quoted below).

    python3 -m unittest discover -s loadtest -p 'test_*.py'     # or: python3 loadtest/test_report.py
"""
import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest
import unittest.mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402

FIX = os.path.join(HERE, "fixtures")


def fixture(name):
    return os.path.join(FIX, name)


class TmpState(contextlib.ExitStack):
    """A temp dir as the scripts' $LOADTEST_TMP, with SETTINGS recorded."""

    def __init__(self, settings=""):
        super().__init__()
        self.dir = self.enter_context(tempfile.TemporaryDirectory())
        self.env = self.enter_context(unittest.mock.patch.dict(os.environ, {"LOADTEST_TMP": self.dir}))
        with open(os.path.join(self.dir, "report.json"), "w") as f:
            f.write('{"settings": "%s"}' % settings)


class WrkTest(unittest.TestCase):
    def test_latency(self):
        w = report.Wrk.file(fixture("wrk-latency.txt"))
        self.assertEqual((w.rps_text, w.rps, w.p50, w.p99, w.requests, w.non2xx, w.sockerr),
                         ("37556.10", 37556.10, 1.6, 4.0, 78868, 0, 0))
        # runs.tsv as the awk parser wrote it: wrk's req/s, ms as awk prints numbers
        self.assertEqual(w.tsv(), ["37556.10", "1.6", "4", "0", "0", "78868"])

    def test_microseconds_and_non2xx(self):
        w = report.Wrk.file(fixture("wrk-breaker-during.txt"))
        self.assertEqual((round(w.p50, 6), w.p99, w.non2xx, w.requests), (0.815, 2.64, 8, 38610))
        # breaker.sh's table row, as the shell version printed it
        self.assertEqual(w.row("DURING", 7), "   DURING      35116      0.815      2.640         8           0     38610")

    def test_no_latency_distribution(self):
        w = report.Wrk.file(fixture("wrk-non2xx.txt"))  # ratelimit.sh: wrk -s hot.lua, no --latency
        self.assertEqual((w.rps, w.p50, w.p99, w.non2xx, w.requests), (83585.74, None, None, 254968, 259049))
        self.assertEqual(w.tsv()[1:3], ["NA", "NA"])

    def test_socket_errors(self):
        w = report.Wrk.file(fixture("wrk-socket-errors.txt"))  # a listener that closes every connection
        self.assertEqual((w.rps, w.requests, w.sockerr, w.non2xx), (0.0, 0, 16042, 0))

    def test_units_and_empty(self):
        self.assertEqual([report.Wrk.ms(v) for v in ("617.00us", "2.35ms", "1.02s", "1.50m", "x")],
                         [0.617, 2.35, 1020.0, 90000.0, None])
        w = report.Wrk("")  # wrk did not run
        self.assertEqual(w.tsv(), ["NA", "NA", "NA", "0", "0", "NA"])


class OhaTest(unittest.TestCase):
    """oha's JSON reports (oha 1.16.0, `--no-tui --output-format json --worker-threads 2`):
    oha-gateway.json is run.sh's oha run on the gateway (-c 64 -z 3s);
    oha-mixed-statuses-errors.json a run (-c 4 -z 1s) on a python3 server that answered
    every 10th request 429 and closed the connection on every 25th without answering."""

    def test_gateway_run(self):
        o = report.Oha.file(fixture("oha-gateway.json"))
        self.assertEqual((o.statuses, o.errors, o.deadline, o.responses, o.success_rate, o.non2xx, o.n_errors),
                         ({"200": 64286}, {}, 60, 64286, 1.0, 0, 0))
        # req/s = responses / oha's total time, like wrk's; oha's own figure also counts
        # the 60 requests aborted at the deadline
        self.assertAlmostEqual(o.rps, 64286 / 3.003891355)
        self.assertAlmostEqual(o.oha_rps, 21420.881248882586)
        self.assertEqual((round(o.p50, 6), round(o.p99, 6)), (2.853786, 8.729161))  # latencyPercentiles, s -> ms
        self.assertEqual(o.tsv(), ["21400.91", "2.85379", "8.72916", "1", "200:64286", "{}", "60", "64286", "21420.88"])

    def test_statuses_and_errors(self):
        o = report.Oha.file(fixture("oha-mixed-statuses-errors.json"))
        self.assertEqual(o.statuses, {"200": 88, "429": 8})
        self.assertEqual(o.errors, {"connection closed before message completed": 4})  # the deadline apart
        self.assertEqual((o.deadline, o.responses, o.non2xx, o.n_errors, o.success_rate), (4, 96, 8, 4, 0.96))
        self.assertEqual(round(o.p99, 6), 44.350949)
        self.assertEqual(report.Oha.dist(o.statuses), "200:88,429:8")
        self.assertEqual(o.tsv()[4:7], ["200:88,429:8", '{"connection closed before message completed": 4}', "4"])

    def test_not_a_report(self):
        for text in ("", "{", "[]", '{"x": 1}'):  # oha did not run, was killed, ...
            o = report.Oha(text)
            self.assertEqual((o.rps, o.p99, o.success_rate, o.statuses, o.responses), (None, None, None, {}, None))
            self.assertEqual(o.tsv(), ["NA", "NA", "NA", "NA", "-", "{}", "0", "NA", "NA"])

    def test_a_run_without_a_report(self):
        with TmpState("load_tools=wrk,oha") as st:
            CliTest.run_report(self, "oha-round", "1", "nginx", os.path.join(st.dir, "absent.json"), "124",
                               env=dict(os.environ))
            o = report.oha_table(report.State(), ["nginx"])["nginx"]
        self.assertEqual((o["rps"], o["p99"], o["success"], o["statuses"], o["failed"]),
                         (None, None, None, {}, ["round 1 (oha exit 124)"]))

    def test_round_lines_name_the_tool(self):
        """With oha, wrk's round lines say wrk, in the columns of oha's; without, as before."""
        for tools, want in (("wrk,oha", "   round 2  gateway-bare  wrk            37556.10 req/s"),
                            ("wrk", "   round 2  gateway-bare            37556.10 req/s")):
            with TmpState("load_tools=" + tools):
                line = CliTest.run_report(self, "round", "2", "gateway-bare", fixture("wrk-latency.txt"), "0",
                                          env=dict(os.environ))
            self.assertEqual(line, want + "  p50    1.600 ms  p99    4.000 ms  non-2xx 0  socket errors 0\n")

    def test_rounds_and_side_by_side(self):
        """oha-round twice (the two fixtures as rounds of one target), then run-report:
        medians, totals, and the side-by-side row next to wrk's."""
        with TmpState("duration_s=3 rounds=2 connections=64 wrk_threads=2 access_log=on warmup_s=1 "
                      "load_tools=wrk,oha oha_threads=2") as st:
            env = dict(os.environ)
            with open(os.path.join(st.dir, "runs.tsv"), "w") as f:
                f.write("\t".join(report.RUNS_HEAD) + "\n1\tgateway-bare\t38580.32\t1.56\t4.25\t0\t0\t115788\t0\n"
                        "2\tgateway-bare\t40000.00\t1.50\t4.75\t0\t0\t120000\t0\n")
            for r, name in (("1", "oha-gateway.json"), ("2", "oha-mixed-statuses-errors.json")):
                line = CliTest.run_report(self, "oha-round", r, "gateway-bare", fixture(name), "0", env=env)
            self.assertEqual(line, "   round 2  gateway-bare  oha               95.80 req/s  p50   43.990 ms  p99   "
                                   "44.351 ms  statuses 200:88,429:8  errors 4  aborted at the deadline 4\n")
            o = report.oha_table(report.State(), ["gateway-bare"])["gateway-bare"]
            self.assertEqual((o["rps"], o["p99"]), (round((21400.91 + 95.80) / 2, 3), round((8.72916 + 44.3509) / 2, 3)))
            self.assertEqual((o["statuses"], o["errors"], o["deadline"], o["responses"], o["non2xx"]),
                             ({"200": 64374, "429": 8}, {"connection closed before message completed": 4}, 64, 64382, 8))
            self.assertAlmostEqual(o["success"], 64382 / 64386)
            self.assertEqual(o["failed"], [])
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                report.cmd_run_report(argparse.Namespace(targets=["gateway-bare"]))
            lines = out.getvalue().splitlines()
            i = lines.index(next(l for l in lines if l.startswith("== wrk and oha side by side")))
            self.assertEqual(lines[i + 1].split(), ["target", "wrk", "req/s", "oha", "req/s", "oha/wrk", "wrk", "p99",
                                                    "ms", "oha", "p99", "ms", "wrk", "non-2xx", "oha", "success", "oha",
                                                    "errors", "aborted", "oha", "statuses"])
            self.assertEqual(lines[i + 2].split(), ["gateway-bare", "39290", "10748", "0.27", "4.500", "26.540", "0",
                                                    "99.99%", "4", "64", "200:64374,429:8"])
            self.assertIn("== WARNING: gateway-bare: oha saw 4 error(s) and 8 non-2xx/3xx response(s): errors "
                          "connection closed before message completed:4, statuses 200:64374,429:8", lines)
            body = report.read(os.path.join(st.dir, "results-body.txt"))
            self.assertIn("## side by side (wrk and oha)\ntarget\twrk_req_per_s", body)
            self.assertIn("\n## oha runs\nround\ttarget", body)
            self.assertTrue(body.index("## oha runs") < body.index("## summary") < body.index("## runs"))


class CostTest(unittest.TestCase):
    """run.sh's cost of a run: CPU time per request from /proc/PID/stat snapshots and the
    upstream's new connections from its stub_status, on snapshots captured around real runs:
    nginx-upstream-*: `wrk -t2 -c8 -d3s` straight at the upstream nginx (its master and its
    one worker, stub_status read before and after; wrk-upstream-c8.txt);
    gateway-*: run.sh's wrk run on the gateway (DURATION=3, wrk-gateway-3s.txt), whose
    /metrics counted 282 gateway_upstream_pool_reuse_races_total by the end of the run."""

    def snap(self, prefix):
        return ([report.read(fixture(prefix + "-cpu-before.txt")), report.read(fixture(prefix + "-cpu-after.txt"))],
                [report.read(fixture(prefix + "-status-before.txt")), report.read(fixture(prefix + "-status-after.txt"))])

    def test_stub_status(self):
        self.assertEqual(report.stub_status(report.read(fixture("nginx-upstream-status-after.txt"))),
                         {"active": 1, "accepts": 12, "handled": 12, "requests": 333149, "reading": 0, "writing": 1,
                          "waiting": 0})
        self.assertEqual(report.stub_status(report.read(fixture("gateway-status-before.txt")))["accepts"], 360)
        for text in ("", "curl: (7) Failed to connect", "<html>ok</html>"):  # the read failed
            self.assertEqual(report.stub_status(text), {})

    def test_proc_ticks(self):
        before = report.proc_ticks(report.read(fixture("nginx-upstream-cpu-before.txt")))
        after = report.proc_ticks(report.read(fixture("nginx-upstream-cpu-after.txt")))
        self.assertEqual((before, after), ({"28231": 0, "28234": 0}, {"28231": 0, "28234": 49 + 100}))  # master, worker
        self.assertEqual(report.cpu_delta(before, after), (149, []))
        # the gateway: one line for the process, all its 11 threads (utime 66 -> 260, stime 26 -> 129)
        g = [report.proc_ticks(t) for t in self.snap("gateway")[0]]
        self.assertEqual(g, [{"30451": 92}, {"30451": 389}])

    def test_proc_ticks_odd_names_and_changes(self):
        line = report.read(fixture("gateway-cpu-after.txt")).replace("(gateway)", "(a) b (c)")
        self.assertEqual(report.proc_ticks(line), {"30451": 389})  # counted from the name's last ") "
        self.assertEqual(report.proc_ticks("garbage\n12 (x) S 1\n"), {})
        # a worker started during the run counts from 0; one that ended is reported
        self.assertEqual(report.cpu_delta({"1": 5, "2": 7}, {"1": 9, "3": 4}), (8, ["2"]))
        self.assertEqual(report.cpu_delta({"1": 5}, {}), (None, ["1"]))  # the process died

    def test_cost_upstream_run(self):
        """The reads' own connection and request are taken out: what is left is wrk's 8
        connections plus the one it opens first to test the address, and exactly the
        requests wrk counted."""
        cpu, status = self.snap("nginx-upstream")
        requests = report.Wrk.file(fixture("wrk-upstream-c8.txt")).requests
        c, gone = report.cost_of(requests, cpu, status, 100)
        self.assertEqual((c["upstream_accepts"], c["upstream_requests"], requests), (9, 333146, 333146))
        self.assertEqual((c["cpu_ticks"], c["procs"], gone), (149, 2, []))
        self.assertAlmostEqual(c["cpu_us_per_request"], 1.49e6 / 333146)  # 4.47 us
        self.assertAlmostEqual(c["upstream_connects_per_1000"], 9000 / 333146)

    def test_cost_gateway_run(self):
        cpu, status = self.snap("gateway")
        requests = report.Wrk.file(fixture("wrk-gateway-3s.txt")).requests
        c, _ = report.cost_of(requests, cpu, status, 100)
        self.assertEqual((requests, c["cpu_ticks"], c["upstream_accepts"], c["upstream_requests"]),
                         (70444, 297, 277, 70504))  # (the upstream also saw the requests wrk left in flight)
        self.assertEqual(("%.3f" % c["cpu_us_per_request"], "%.3f" % c["upstream_connects_per_1000"]),
                         ("42.161", "3.932"))
        self.assertEqual(report.cost_of(requests, cpu, ["", status[1]], 250)[0]["upstream_accepts"], None)
        self.assertAlmostEqual(report.cost_of(requests, cpu, status, 250)[0]["cpu_us_per_request"], 297 * 4000 / 70444)
        self.assertIsNone(report.cost_of(None, cpu, status, 100)[0]["cpu_us_per_request"])  # wrk did not run

    def test_gateway_line_has_the_pool_races(self):
        """The gateway's own count of pooled connections it dropped (each then a new
        connect) is printed with its counters: 282 by the end of the run whose 277 upstream
        connects test_cost_gateway_run counts (metrics-gateway-3s.txt)."""
        with TmpState("access_log=off rounds=1 connections=64 warmup_s=1 load_tools=wrk") as st:
            with open(os.path.join(st.dir, "gateway-end.metrics"), "w") as f:
                f.write(report.read(fixture("metrics-gateway-3s.txt")))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                notes = report.run_gateway(report.State(), "gateway", {"non2xx": "0"})
        self.assertTrue(out.getvalue().startswith("== gateway /metrics: 0 responses with status 5xx"))
        self.assertIn("dropped instead of reused (Pingora's reuse race, each a new connect): 282\n", out.getvalue())
        self.assertIn("gateway_pool_reuse_races=282", notes.split())

    def round_with_cost(self, target, tool="wrk", out="wrk-gateway-3s.txt"):
        cpu = [fixture("gateway-cpu-before.txt"), fixture("gateway-cpu-after.txt")]
        status = [fixture("gateway-status-before.txt"), fixture("gateway-status-after.txt")]
        return CliTest.run_report(self, "round" if tool == "wrk" else "oha-round", "1", target, fixture(out), "0",
                                  "--cpu", *cpu, "--upstream-status", *status, env=dict(os.environ))

    def test_round_records_the_cost(self):
        with TmpState("load_tools=wrk clk_tck=100") as st:
            line = self.round_with_cost("gateway")
            upstream = self.round_with_cost("upstream")
            cost = report.read(os.path.join(st.dir, "cost.tsv")).splitlines()
        self.assertTrue(line.endswith("socket errors 0  CPU 42.2 µs/req  upstream connects 277 (3.932/1000 req)\n"))
        self.assertIn("client connects 277", upstream)  # at the upstream itself they are wrk's
        self.assertEqual(cost[0].split("\t"), report.COST_HEAD)
        self.assertEqual(cost[1], "1\tgateway\twrk\t70444\t297\t42.161\t1\t277\t3.932\t70504")
        with TmpState("load_tools=wrk") as st:  # without the options: no cost.tsv, the line as before
            CliTest.run_report(self, "round", "1", "gateway", fixture("wrk-gateway-3s.txt"), "0", env=dict(os.environ))
            self.assertFalse(os.path.exists(os.path.join(st.dir, "cost.tsv")))

    def test_table_and_summary(self):
        """The medians of cost.tsv's wrk runs in the table, their ratio to nginx's, '-' for
        the upstream's connects; oha's CPU side by side with wrk's."""
        cost = "\t".join(report.COST_HEAD) + "\n" + "".join(
            "%d\t%s\t%s\t100000\t0\t%s\t3\t%s\t%s\t100000\n" % (r, t, tool, cpu, n, per) for r, t, tool, cpu, n, per in (
                (1, "nginx", "wrk", "17.873", 15, "0.089"), (2, "nginx", "wrk", "19.000", 0, "0.000"),
                (3, "nginx", "wrk", "18.000", 1, "0.010"),
                (1, "gateway", "wrk", "42.161", 277, "3.932"), (2, "gateway", "wrk", "36.000", 100, "1.000"),
                (3, "gateway", "wrk", "NA", 200, "2.000"),
                (1, "upstream", "wrk", "5.000", 9, "0.027"), (1, "gateway-limited", "wrk", "46.900", 3, "0.030"),
                (1, "gateway", "oha", "50.000", 64, "0.640"), (1, "nginx", "oha", "25.000", 0, "0.000")))
        runs = "\t".join(report.RUNS_HEAD) + "\n" + "".join(
            "1\t%s\t%s\t1\t4\t0\t0\t100000\t0\n" % (t, rps) for t, rps in
            (("upstream", "90000"), ("nginx", "50000"), ("gateway", "25000"), ("gateway-limited", "24000"),
             ("gateway-bare", "30000")))
        with TmpState("duration_s=8 rounds=3 connections=64 wrk_threads=2 access_log=off warmup_s=1 "
                      "load_tools=wrk,oha clk_tck=100") as st:
            for name, text in (("cost.tsv", cost), ("runs.tsv", runs)):
                with open(os.path.join(st.dir, name), "w") as f:
                    f.write(text)
            targets = ["upstream", "nginx", "gateway", "gateway-limited", "gateway-bare"]
            rows = report.run_table(report.State(), targets)
            got = {t: (r["cpu"], r["cpu_vs_nginx"], r["upconn"]) for t, r in rows.items()}
            self.assertEqual(got, {"upstream": (5.0, "0.28", "-"), "nginx": (18.0, "1.00", "0.010"),
                                   "gateway": ((42.161 + 36) / 2, "2.17", "2.000"),
                                   "gateway-limited": (46.9, "2.61", "0.030"), "gateway-bare": (None, "-", "NA")})
            self.assertEqual(report.oha_table(report.State(), ["nginx"]), {})  # (no oha-runs.tsv)
            with open(os.path.join(st.dir, "oha-runs.tsv"), "w") as f:
                f.write("\t".join(report.OHA_RUNS_HEAD) + "\n" + "".join(
                    "1\t%s\t20000\t2\t8\t1\t200:160000\t{}\t64\t160000\t20000\t0\n" % t for t in targets))
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                report.cmd_run_report(argparse.Namespace(targets=targets))
            lines = out.getvalue().splitlines()
            summary = report.read(os.path.join(st.dir, "summary.tsv")).splitlines()
            body = report.read(os.path.join(st.dir, "results-body.txt"))
        head = next(l for l in lines if l.startswith("target "))
        self.assertEqual(head.split()[:4], ["target", "CPU", "µs/req", "CPU"])
        self.assertEqual(next(l for l in lines if l.startswith("gateway ")).split(),
                         ["gateway", "39.1", "2.17", "25000", "1.000", "4.000", "0.50", "1.00", "2.000", "0", "0"])
        self.assertIn("== limiter cost, CPU per request with the limiter on / off (1.00 = free): "
                      "gateway-limited/gateway 1.20", lines)
        self.assertIn("== limiter cost, req/s with the limiter on / off (1.00 = free): gateway-limited/gateway 0.96",
                      lines)
        self.assertNotIn("features cost", "\n".join(lines))  # (gateway-bare has no CPU figure)
        side = lines[lines.index(next(l for l in lines if l.startswith("== wrk and oha side by side"))) + 1]
        self.assertIn("aborted  wrk CPU µs/req  oha CPU µs/req oha statuses", side)
        self.assertEqual(next(l for l in lines if l.startswith("gateway ") and "200:" in l).split()[10:12],
                         ["39.1", "50.0"])
        self.assertEqual(summary[0].split("\t")[-3:], ["median_cpu_us_per_request", "cpu_vs_nginx",
                                                      "median_upstream_connects_per_1000"])
        self.assertEqual(summary[1].split("\t")[-3:], ["5.000", "0.28", "-"])
        self.assertEqual(summary[2].split("\t")[-3:], ["18.000", "1.00", "0.0100"])
        self.assertTrue(body.index("## oha runs") < body.index("## cost per run") < body.index("## summary"))


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.m = report.Metrics.file(fixture("metrics-limited-redis.txt"))

    def test_selectors(self):
        m = self.m
        total = m.get("gateway_requests_total")
        self.assertGreater(total, 0)
        self.assertEqual(m.get('gateway_ratelimit_decisions_total{outcome="allowed"}'), total)
        self.assertEqual(m.get('gateway_ratelimit_decisions_total{outcome="limited|fallback"}'), 0)
        self.assertEqual(m.get('gateway_requests_total{status="5.."}'), 0)
        self.assertEqual(m.get('gateway_requests_total{status="200"}') + m.get('gateway_requests_total{status="0"}'), total)
        self.assertEqual(m.get("gateway_ratelimit_redis_round_trips_total"), 163)
        # a name is matched whole, not as a prefix
        self.assertEqual(m.get("gateway_requests"), 0)

    def test_absent_and_empty(self):
        self.assertFalse(self.m.has("gateway_upstream_pool_reuse_races_total_nope"))
        self.assertIsNone(report.Metrics("").get("gateway_requests_total"))  # scrape failed: NA
        self.assertEqual(report.awk_num(report.Metrics("").msum("x")), "NA")

    def test_redis_commandstats(self):
        self.assertEqual(report.redis_evalsha(report.read(fixture("redis-commandstats.txt"))), 163)
        self.assertEqual(report.redis_evalsha(""), 0)


class RunTableTest(unittest.TestCase):
    """run.sh's medians, totals and ratios against the tables the awk version wrote."""

    def check(self, runs, summary):
        targets = [l.split("\t")[0] for l in summary.splitlines()[1:]]
        with TmpState() as st:
            with open(os.path.join(st.dir, "runs.tsv"), "w") as f:
                f.write(runs)
            rows = report.run_table(report.State(), targets)
        got = ["\t".join([r["target"], report.fmt(r["rps"], ".3f"), report.fmt(r["p50"], ".3f"),
                          report.fmt(r["p99"], ".3f"), r["vs_nginx"], r["vs_gateway"], r["non2xx"], r["sockerr"]])
               for r in rows.values()]
        self.assertEqual(got, summary.splitlines()[1:])

    def test_one_round(self):
        self.check(report.read(fixture("run-runs.tsv")), report.read(fixture("run-summary.tsv")))

    def test_five_rounds(self):
        text = report.read(fixture("run-results-5-rounds.txt"))
        summary, runs = text.split("## summary\n")[1].split("## runs\n")
        self.check(runs, summary)

    def test_even_rounds_and_missing(self):
        runs = "\t".join(report.RUNS_HEAD) + "\n" + "".join(
            "%d\tgateway\t%s\t1\t2\t1\t0\t10\t0\n" % (r, rps) for r, rps in ((1, "100"), (2, "300"), (3, "NA"), (4, "200")))
        with TmpState() as st:
            with open(os.path.join(st.dir, "runs.tsv"), "w") as f:
                f.write(runs)
            r = report.run_table(report.State(), ["gateway", "nginx"])
        self.assertEqual((r["gateway"]["rps"], r["gateway"]["non2xx"], r["gateway"]["vs_nginx"]), (200, "4", "-"))
        self.assertEqual((r["nginx"]["rps"], r["nginx"]["vs_gateway"]), (None, "-"))


class SlowlorisTest(unittest.TestCase):
    def test_tally_matches_the_old_helper(self):
        old = report.read_kv(fixture("slowloris-attack-old.txt"))  # printed by the helper slowloris.sh had
        t = report.tally(fixture("slowloris-connections.tsv"))
        got = {"closed_by_server": t["closed"], "eof": t["eof"], "reset": t["reset"], "got_408": t["got408"],
               "statuses": t["statuses"], "still_open_at_bound": t["still"], "close_min_s": t["cmin"],
               "close_median_s": t["cmed"], "close_p90_s": t["cp90"], "close_max_s": t["cmax"],
               "max_header_bytes_sent": t["sent"], "first_close_wall": "%.3f" % t["first_close"],
               "last_close_wall": "%.3f" % t["last_close"]}
        self.assertEqual({k: str(v) for k, v in got.items()}, {k: old[k] for k in got})

    def test_samples(self):
        t0 = float(report.read_kv(fixture("slowloris-attack-old.txt"))["start_wall"])
        # as slowloris.sh printed them for this run
        self.assertEqual(report.samples_summary(fixture("slowloris-samples.txt"), t0, 1),
                         {"before": "0", "peak": "116", "peak_t": "1.2", "after": "0",
                          "per_s": "0s:100 1s:116 2s:16 3s:16 4s:0"})
        self.assertEqual(report.samples_summary(fixture("slowloris-samples.txt"), t0, 2)["peak"], "116")
        self.assertEqual(report.samples_summary("/nonexistent", t0, 1),
                         {"before": "NA", "peak": "NA", "peak_t": "0.0", "after": "NA", "per_s": "0s:-"})

    def test_seconds(self):
        self.assertEqual((report.seconds("5s"), report.seconds("500ms")), (5, 0.5))


class BreakerTest(unittest.TestCase):
    def test_timeline(self):
        kill = float(report.killwatch_result(fixture("breaker-killwatch.txt"))["kill_wall"])
        lines = report.timeline(fixture("breaker-samples.jsonl"), kill, "127.0.0.1:55559", "127.0.0.1:41855")
        self.assertEqual(lines, [  # as breaker-tool.py printed it for this run
            "   s from kill       200  non-200   none    502   breaker up1/up2 at end",
            "   [-2,-1)         12441        0      0      0   closed/closed",
            "   [-1,+0)         34027       24     24      0   closed/closed",
            "   [+0,+1)         36244       13      5      8   closed/open",
            "   [+1,+2)         34125        0      0      0   closed/open",
        ])

    def test_snapshot(self):
        snap = report.breaker_snapshot(report.read(fixture("metrics-limited-redis.txt")))
        self.assertEqual(sum(snap["status"].values()),
                         report.Metrics.file(fixture("metrics-limited-redis.txt")).get('gateway_requests_total{route="app"}'))
        self.assertEqual(report.transitions(snap, "a", "b"), "none")


class LogTest(unittest.TestCase):
    def test_log_summary(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            report.log_summary(fixture("gateway-warnings.txt"), 5, strip_ids=True)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "== gateway-warnings log: 14 warning/error line(s), most frequent (%s):"
                         % fixture("gateway-warnings.txt"))
        self.assertEqual(lines[1:], [  # as lib.sh's log_summary printed them for this log
            "   8 ERROR pingora_proxy] Fail to proxy: Upstream ConnectRefused context: Fail to connect to addr: N.N.N.N:N, "
            "scheme: HTTP cause:  context: Fail to connect to N.N.N.N:N cause: Connection refused (o",
            "   5 WARN  pingora_proxy] Fail to proxy: Upstream ReadError context: Peer: addr: N.N.N.N:N, scheme: HTTP "
            "cause:  context: while reading response headers, bytes already read: N cause: Connection res",
            "   1 WARN  gateway::routing::pool] pool app: circuit of N.N.N.N:N closed -> open",
        ])

    def test_pingap_log(self):
        """pingap's log lines (run.sh's pingap target) start with an RFC 3339 time, not "[time"."""
        line = ('2026-12-01T02:09:19.20526273Z ERROR fail to proxy error=Downstream ConnectionClosed context: Peer: '
                'addr: 127.0.0.1:37877, scheme: HTTP cause:  context: Prematurely before response header is sent '
                'remote_addr="127.0.0.1" error_type="ConnectionClosed" path="/"\n')
        info = '2026-12-01T02:09:21.69058082Z  INFO update backend success name="app" elapsed="0ms"\n'
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "pingap.log")
            with open(path, "w") as f:
                f.write(info + line + line.replace("19.2", "30.2"))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                report.log_summary(path, 4)
        self.assertEqual(out.getvalue().splitlines()[1:], [
            '   2 ERROR fail to proxy error=Downstream ConnectionClosed context: Peer: addr: N.N.N.N:N, scheme: HTTP '
            'cause:  context: Prematurely before response header is sent remote_addr="N.N.N.N" error_type='])  # (cut at 200)


class SmallTest(unittest.TestCase):
    def test_facts(self):
        self.assertEqual(report.facts("phases=a b c duration_s=3 x=1=2".split()),
                         {"phases": "a b c", "duration_s": "3", "x": "1=2"})

    def test_numbers(self):
        self.assertEqual([report.awk_num(v) for v in (None, 4.0, 0.617, 1020, 1 / 3)], ["NA", "4", "0.617", "1020", "0.333333"])
        self.assertEqual([report.ratio(1, 2), report.ratio(1, 0), report.ratio(None, 1, none="-")], ["0.50", "NA", "-"])
        self.assertEqual([report.human_size(n) for n in (4096, 27 * 2 ** 20 - 5, 3 * 2 ** 30)], ["4.0K", "27M", "3.0G"])

    def test_run_roles(self):
        self.assertEqual([k for k, v in report.run_role("gateway-limited-redis").items() if v], ["full", "limited", "redis"])
        self.assertFalse(report.run_role("gateway-bare")["full"])
        self.assertTrue(report.run_role("gateway-jwt-rs")["jwt"])
        self.assertEqual([k for k, v in report.run_role("gateway-full").items() if v], ["full", "limited", "redis", "jwt"])


class VersionTest(unittest.TestCase):
    """The versions in a results file's header, from what the tools print (captured from
    HAProxy 2.6 of Debian 12 and pingap 0.13.1 installed by cargo), through stand-in
    executables named by run.sh's LOADTEST_* variables."""

    def fake(self, d, name, text, stream=""):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\ncat %s<<'EOF'\n%sEOF\n" % (stream, text))
        os.chmod(path, 0o755)
        return path

    def test_haproxy_and_pingap(self):
        haproxy = ("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\n"
                   "Status: long-term supported branch - will stop receiving fixes around Q2 2027.\n"
                   "Known bugs: http://www.haproxy.org/bugs/bugs-2.6.12.html\n"
                   "Running on: Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0 x86_64\n")
        with tempfile.TemporaryDirectory() as d:
            env = {"LOADTEST_HAPROXY": self.fake(d, "haproxy", haproxy),
                   "LOADTEST_PINGAP": self.fake(d, "pingap", "pingap 0.13.1 (VERGEN_IDEMPOTENT_OUTPUT)\n"),
                   "LOADTEST_NGINX": self.fake(d, "nginx", "nginx version: nginx/1.22.1\n", ">&2 ")}
            with unittest.mock.patch.dict(os.environ, env):
                self.assertEqual([report.version(t) for t in ("haproxy", "pingap", "nginx")],
                                 ["2.6.12-1+deb12u4", "0.13.1", "1.22.1"])
            # not installed (run.sh leaves the target out, or its path is wrong), or not them
            env = {"LOADTEST_HAPROXY": os.path.join(d, "none"), "LOADTEST_PINGAP": self.fake(d, "other", "usage: x\n")}
            with unittest.mock.patch.dict(os.environ, env):
                self.assertEqual([report.version(t) for t in ("haproxy", "pingap")], ["NA", "NA"])

    def test_proxies_in_the_table(self):
        """haproxy and pingap are plain proxies in the table: ratios to nginx, their
        upstream connects, no gateway ratio nor gateway counters."""
        self.assertFalse(any(report.run_role("haproxy").values()) or any(report.run_role("pingap").values()))
        targets = ["nginx", "haproxy", "pingap", "gateway"]
        runs = "\t".join(report.RUNS_HEAD) + "\n" + "".join(
            "1\t%s\t%s\t1\t4\t0\t0\t100000\t0\n" % (t, rps) for t, rps in
            (("nginx", "50000"), ("haproxy", "60000"), ("pingap", "40000"), ("gateway", "25000")))
        cost = "\t".join(report.COST_HEAD) + "\n" + "".join(
            "1\t%s\twrk\t100000\t0\t%s\t1\t%s\t%s\t100000\n" % (t, cpu, n, per) for t, cpu, n, per in
            (("nginx", "20.000", 1, "0.010"), ("haproxy", "15.000", 0, "0.000"), ("pingap", "30.000", 2, "0.020"),
             ("gateway", "40.000", 3, "0.030")))
        with TmpState("rounds=1 duration_s=3 connections=64 access_log=off load_tools=wrk clk_tck=100") as st:
            for name, text in (("cost.tsv", cost), ("runs.tsv", runs)):
                with open(os.path.join(st.dir, name), "w") as f:
                    f.write(text)
            rows = report.run_table(report.State(), targets)
        self.assertEqual({t: (r["vs_nginx"], r["cpu_vs_nginx"], r["upconn"], r["vs_gateway"]) for t, r in rows.items()},
                         {"nginx": ("1.00", "1.00", "0.010", "-"), "haproxy": ("1.20", "0.75", "0.000", "-"),
                          "pingap": ("0.80", "1.50", "0.020", "-"), "gateway": ("0.50", "2.00", "0.030", "1.00")})


class CliTest(unittest.TestCase):
    def run_report(self, *args, env=None):
        return subprocess.run([sys.executable, os.path.join(HERE, "report.py"), *args], capture_output=True,
                              text=True, check=True, env=env).stdout

    def test_wrk_line_and_metric(self):
        self.assertEqual(self.run_report("wrk-line", "--width", "7", "DURING", fixture("wrk-breaker-during.txt"), "3"),
                         "   DURING    35116.44 req/s  p50    0.815 ms  p99    2.640 ms  non-2xx 8  socket errors 0"
                         "  (wrk exit 3)\n")
        self.assertEqual(self.run_report("metric", fixture("metrics-limited-redis.txt"),
                                         "gateway_ratelimit_redis_round_trips_total"), "163\n")

    def test_summary_and_verdict(self):
        with TmpState("slow=3") as st:
            s = report.State()
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(s.verdict(True, "a"), "ok")
                self.assertEqual(s.verdict(False, "b-5xx"), "MISSED")
                s.sum("## one")
            self.assertEqual(s.missed(), ["b-5xx"])
            self.assertEqual(report.read(os.path.join(st.dir, "summary.txt")), "## one\n")
            self.assertEqual(s.settings, {"slow": "3"})


if __name__ == "__main__":
    unittest.main()


class RegionsTest(unittest.TestCase):
    def test_rights_of_reads_a_real_redis_and_says_when_it_cannot(self):
        s = __import__("socket").socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    if report.resp_command(port, "PING") == b"PONG":
                        break
                except OSError:
                    __import__("time").sleep(0.05)
            report.resp_command(port, "HSET", "k", "share", "950000", "g:1:0", "450000", "ws", "x")
            self.assertEqual(report.rights_of(port, "k"), {"share": 950000, "g:1:0": 450000})
            self.assertEqual(report.rights_of(port, "missing"), {})
            with self.assertRaises(OSError):
                report.resp_command(port, "NOSUCHCOMMAND")
        finally:
            server.kill()
            server.wait()
        self.assertIsNone(report.rights_of(port, "k"))

    def test_share_samples_find_when_a_share_rose_and_when_regions_agreed(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "shares.tsv")
            with open(path, "w") as f:
                f.write("10.0\t0\t500000\t\n10.0\t1\t500000\t\n"
                        "10.5\t0\t950000\t1:0=450000\n10.5\t1\tNA\t\n"
                        "11.0\t0\t950000\t1:0=450000\n11.0\t1\t50000\t1:0=450000\nbroken line\n")
            samples = report.share_samples(path)
        self.assertEqual(len(samples), 3)
        self.assertEqual(samples[1][1][1], (None, ""))
        self.assertEqual(report.first_time(samples, 10.0, lambda rs: rs[0][0] >= 900000), 0.5)
        same = lambda rs: len({g for _, g in rs.values()}) == 1 and all(s is not None for s, _ in rs.values())
        self.assertAlmostEqual(report.first_time(samples, 10.2, same), 0.8)
        self.assertIsNone(report.first_time(samples, 11.5, same))
