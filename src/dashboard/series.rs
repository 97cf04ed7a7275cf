//! Requests per second over the last five minutes, and latency quantiles over the last
//! minute, made once a second from the cumulative counters the request path already
//! updates: the dashboard adds nothing to a request.

use crate::observability::RequestTotals;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Seconds of history kept for the rate charts.
pub const HISTORY: usize = 300;
/// Seconds the latency quantiles are computed over.
pub const LATENCY_WINDOW: usize = 60;
/// Routes kept per second (the busiest); the rest are summed under "other".
const ROUTES_PER_POINT: usize = 32;

/// Status classes: 1xx to 5xx, and "no response" (status 0: the client left first).
pub const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn class(status: u16) -> usize {
    usize::from(status / 100).min(5)
}

/// One second: requests by status class, and per route their count and latency buckets.
#[derive(Debug, Clone)]
struct Point {
    unix: u64,
    classes: [u64; 6],
    routes: Vec<RoutePoint>,
}

#[derive(Debug, Clone)]
struct RoutePoint {
    route: Arc<str>,
    count: u64,
    buckets: Box<[u64]>,
}

/// Per-second deltas of the request counters, for [`HISTORY`] seconds.
#[derive(Debug, Default)]
pub struct Series {
    points: VecDeque<Point>,
    /// The previous reading, to take differences from.
    last_classes: [u64; 6],
    last_routes: HashMap<Arc<str>, Vec<u64>>,
    bounds: Vec<f64>,
    primed: bool,
}

/// A route's requests per second over the history, oldest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteRates {
    pub route: String,
    pub rps: Vec<f64>,
}

/// A route's latency over the last minute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteLatency {
    pub route: String,
    pub requests: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Series {
    /// Adds the second ending at `unix` from cumulative `totals`. The first reading only
    /// sets the baseline (the counters' history before the sampler started is unknown).
    pub fn sample(&mut self, unix: u64, totals: &RequestTotals) {
        let mut classes = [0u64; 6];
        for &(status, n) in &totals.by_status {
            if let Some(c) = classes.get_mut(class(status)) {
                *c += n;
            }
        }
        let mut point = Point {
            unix,
            classes: std::array::from_fn(|i| classes[i].saturating_sub(self.last_classes[i])),
            routes: Vec::new(),
        };
        self.last_classes = classes;
        self.bounds.clone_from(&totals.bounds);
        for r in &totals.routes {
            let key = match self.last_routes.get_key_value(r.route.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(r.route.as_str()),
            };
            let before = self.last_routes.insert(key.clone(), r.buckets.clone());
            let before = before.unwrap_or_default();
            let buckets: Box<[u64]> = r
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
                .collect();
            let count = buckets.last().copied().unwrap_or(0);
            if count > 0 {
                point.routes.push(RoutePoint {
                    route: key,
                    count,
                    buckets,
                });
            }
        }
        point.routes.sort_by_key(|r| std::cmp::Reverse(r.count));
        if point.routes.len() > ROUTES_PER_POINT {
            let rest = point.routes.split_off(ROUTES_PER_POINT - 1);
            point.routes.push(merge("other", &rest));
        }
        if !self.primed {
            self.primed = true;
            return;
        }
        self.points.push_back(point);
        while self.points.len() > HISTORY {
            self.points.pop_front();
        }
    }

    /// The Unix second of the oldest point (`None` before two readings).
    pub fn start(&self) -> Option<u64> {
        self.points.front().map(|p| p.unix)
    }

    /// Requests per second by status class, oldest first.
    pub fn by_class(&self) -> Vec<(&'static str, Vec<u64>)> {
        CLASSES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, self.points.iter().map(|p| p.classes[i]).collect()))
            .collect()
    }

    /// All requests in the last `seconds` seconds, per second.
    pub fn recent_rate(&self, seconds: usize) -> f64 {
        let n = self.points.len().min(seconds);
        if n == 0 {
            return 0.0;
        }
        let sum: u64 = self
            .points
            .iter()
            .rev()
            .take(n)
            .map(|p| p.classes.iter().sum::<u64>())
            .sum();
        sum as f64 / n as f64
    }

    /// The `n` busiest routes over the history, with their rate each second.
    pub fn top_routes(&self, n: usize) -> Vec<RouteRates> {
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for p in &self.points {
            for r in &p.routes {
                *totals.entry(&r.route).or_default() += r.count;
            }
        }
        let mut names: Vec<(&str, u64)> = totals.into_iter().collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        names
            .into_iter()
            .take(n)
            .map(|(name, _)| RouteRates {
                route: name.to_string(),
                rps: self
                    .points
                    .iter()
                    .map(|p| {
                        p.routes
                            .iter()
                            .find(|r| &*r.route == name)
                            .map_or(0.0, |r| r.count as f64)
                    })
                    .collect(),
            })
            .collect()
    }

    /// p50 and p99 per route over the last minute, busiest first.
    pub fn latency(&self) -> Vec<RouteLatency> {
        let mut sums: HashMap<&str, Vec<u64>> = HashMap::new();
        for p in self.points.iter().rev().take(LATENCY_WINDOW) {
            for r in &p.routes {
                let s = sums
                    .entry(&r.route)
                    .or_insert_with(|| vec![0; r.buckets.len()]);
                for (a, b) in s.iter_mut().zip(r.buckets.iter()) {
                    *a += b;
                }
            }
        }
        let mut out: Vec<RouteLatency> = sums
            .into_iter()
            .map(|(route, buckets)| RouteLatency {
                route: route.to_string(),
                requests: buckets.last().copied().unwrap_or(0),
                p50_ms: quantile(0.5, &self.bounds, &buckets).map(|s| s * 1e3),
                p99_ms: quantile(0.99, &self.bounds, &buckets).map(|s| s * 1e3),
            })
            .collect();
        out.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.route.cmp(&b.route))
        });
        out
    }
}

fn merge(name: &str, points: &[RoutePoint]) -> RoutePoint {
    let len = points.first().map_or(0, |p| p.buckets.len());
    let mut buckets = vec![0u64; len];
    for p in points {
        for (a, b) in buckets.iter_mut().zip(p.buckets.iter()) {
            *a += b;
        }
    }
    RoutePoint {
        route: Arc::from(name),
        count: points.iter().map(|p| p.count).sum(),
        buckets: buckets.into(),
    }
}

/// The `q` quantile of cumulative bucket counts with upper `bounds` (`+Inf` last), by
/// linear interpolation inside the bucket, as Prometheus's `histogram_quantile` does: in
/// the `+Inf` bucket it answers the largest finite bound.
pub fn quantile(q: f64, bounds: &[f64], cumulative: &[u64]) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 || bounds.len() != cumulative.len() {
        return None;
    }
    let rank = q * total as f64;
    let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
    let upper = bounds[i];
    if upper.is_infinite() {
        return bounds.iter().rev().nth(1).copied();
    }
    let (lower, below) = match i {
        0 => (0.0, 0),
        _ => (bounds[i - 1], cumulative[i - 1]),
    };
    let inside = (cumulative[i] - below) as f64;
    if inside == 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below as f64) / inside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::RouteTotals;

    fn totals(by_status: &[(u16, u64)], routes: &[(&str, [u64; 3])]) -> RequestTotals {
        RequestTotals {
            by_status: by_status.to_vec(),
            routes: routes
                .iter()
                .map(|(r, b)| RouteTotals {
                    route: r.to_string(),
                    count: b[2],
                    buckets: b.to_vec(),
                })
                .collect(),
            bounds: vec![0.001, 0.01, f64::INFINITY],
        }
    }

    #[test]
    fn rates_are_differences_of_the_counters_after_a_baseline() {
        let mut s = Series::default();
        s.sample(100, &totals(&[(200, 1000)], &[("api", [900, 1000, 1000])]));
        assert!(s.start().is_none(), "the first reading is the baseline");
        s.sample(
            101,
            &totals(&[(200, 1010), (429, 5)], &[("api", [905, 1015, 1015])]),
        );
        s.sample(
            102,
            &totals(
                &[(200, 1030), (429, 5), (0, 1)],
                &[("api", [925, 1036, 1036])],
            ),
        );
        assert_eq!(s.start(), Some(101));
        let classes: HashMap<_, _> = s.by_class().into_iter().collect();
        assert_eq!(classes["2xx"], [10, 20]);
        assert_eq!(classes["4xx"], [5, 0]);
        assert_eq!(classes["none"], [0, 1]);
        assert_eq!(s.recent_rate(5), 18.0);
        assert_eq!(s.top_routes(5)[0].rps, [15.0, 21.0]);
        let lat = &s.latency()[0];
        assert_eq!((lat.route.as_str(), lat.requests), ("api", 36));
        // 25 of 36 under 1 ms: the median falls in the first bucket.
        let p50 = lat.p50_ms.unwrap();
        assert!(p50 > 0.0 && p50 <= 1.0, "{p50}");
        let p99 = lat.p99_ms.unwrap();
        assert!(p99 > 1.0 && p99 <= 10.0, "{p99}");
    }

    #[test]
    fn history_is_bounded_and_many_routes_fold_into_other() {
        let mut s = Series::default();
        let names: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
        for t in 0..(HISTORY as u64 + 10) {
            let routes: Vec<(&str, [u64; 3])> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), [0, 0, t * (i as u64 + 1)]))
                .collect();
            s.sample(t, &totals(&[], &routes));
        }
        assert_eq!(s.points.len(), HISTORY);
        assert!(s.points.iter().all(|p| p.routes.len() <= ROUTES_PER_POINT));
        let top = s.top_routes(3);
        assert_eq!(
            top[0].route, "other",
            "68 small routes together are the largest"
        );
        assert_eq!(top[1].route, "r99");
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let bounds = [0.1, 0.2, f64::INFINITY];
        assert_eq!(quantile(0.5, &bounds, &[10, 20, 20]), Some(0.1));
        let q = quantile(0.75, &bounds, &[10, 20, 20]).unwrap();
        assert!(
            (q - 0.15).abs() < 1e-12,
            "halfway into the second bucket: {q}"
        );
        assert_eq!(
            quantile(0.99, &bounds, &[0, 0, 5]),
            Some(0.2),
            "+Inf: the largest finite bound"
        );
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0]), None);
    }
}
