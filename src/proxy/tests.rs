use super::*;
use crate::config;
use crate::config::HashKey;
use pingora::http::RequestHeader;

const CONFIG: &str = "
upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
routes:
  - name: api
    path_prefix: /api
    upstream: api
correlation:
  header: X-Request-ID
";

fn gateway(text: &str) -> Gateway {
    let cfg = config::parse(text).unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let addrs = crate::routing::resolve_backends(&cfg).unwrap();
    let snapshot = Snapshot::build(&cfg, &addrs, &metrics, None);
    Gateway {
        state: Arc::new(ArcSwap::from_pointee(snapshot)),
        metrics,
        access_log: None,
        upstream_idle_timeout: None,
        drain: Arc::new(crate::drain::Drain::new()),
        dashboard: Arc::new(crate::dashboard::Dashboard::new(None)),
    }
}

fn new_ctx(gw: &Gateway) -> Ctx {
    Ctx::new(gw.state.load_full())
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
    r.insert_header("host", "gw.example").unwrap();
    for (k, v) in headers {
        r.insert_header(k.to_string(), *v).unwrap();
    }
    r
}

#[test]
fn ping_is_answered_locally() {
    let gw = gateway(CONFIG);
    let mut ctx = new_ctx(&gw);
    assert_eq!(
        gw.admit(&mut req("GET", "/ping", &[]), &mut ctx),
        Outcome::Respond(Reply::Pong)
    );
    assert_eq!(ctx.route, RouteLabel::Ping);
    assert!(ctx.request_id.is_some());
    assert_eq!(ctx.error, None, "a pong is no failure");
    // Not GET: routed like anything else (here: no route).
    let mut ctx = new_ctx(&gw);
    assert_eq!(
        gw.admit(&mut req("POST", "/ping", &[]), &mut ctx),
        Outcome::Respond(Reply::NotFound)
    );
    assert_eq!(ctx.error, Some(Failure::NoRoute));
}

#[test]
fn routed_request_continues_with_ids() {
    let gw = gateway(CONFIG);
    let mut ctx = new_ctx(&gw);
    let mut r = req(
        "GET",
        "/api/x",
        &[("X-Request-ID", "abc"), ("traceparent", "bad")],
    );
    assert_eq!(gw.admit(&mut r, &mut ctx), Outcome::Continue);
    assert_eq!(ctx.route, RouteLabel::Route(0));
    assert_eq!(ctx.request_id(), "abc");
    let tp = ctx.traceparent.clone().unwrap();
    assert!(correlation::is_valid_traceparent(tp.as_bytes()));
}

#[test]
fn ping_can_be_disabled() {
    let gw = gateway(&format!("{CONFIG}ping:\n  enabled: false\n"));
    let mut ctx = new_ctx(&gw);
    assert_eq!(
        gw.admit(&mut req("GET", "/ping", &[]), &mut ctx),
        Outcome::Respond(Reply::NotFound)
    );
}

#[test]
fn errors_map_to_replies() {
    let ra = Duration::from_secs(3);
    let e = |etype, source: ErrorSource| match source {
        ErrorSource::Upstream => Error::new_up(etype),
        ErrorSource::Downstream => Error::new_down(etype),
        _ => Error::new_in(etype),
    };
    use ErrorSource::*;
    use ErrorType::*;
    assert_eq!(
        respond::reply_for(&e(HTTPStatus(503), Internal), ra),
        Some(Reply::Unavailable { retry_after: ra })
    );
    assert_eq!(
        respond::reply_for(&e(ConnectTimedout, Upstream), ra),
        Some(Reply::GatewayTimeout)
    );
    assert_eq!(
        respond::reply_for(&e(ReadTimedout, Upstream), ra),
        Some(Reply::GatewayTimeout)
    );
    assert_eq!(
        respond::reply_for(&e(ConnectRefused, Upstream), ra),
        Some(Reply::BadGateway)
    );
    assert_eq!(
        respond::reply_for(&e(InvalidHTTPHeader, Upstream), ra),
        Some(Reply::BadGateway)
    );
    assert_eq!(
        respond::reply_for(&e(InvalidHTTPHeader, Downstream), ra),
        Some(Reply::BadRequest)
    );
    assert_eq!(
        respond::reply_for(&e(ConnectionClosed, Downstream), ra),
        None
    );
    assert_eq!(
        respond::reply_for(&e(InternalError, Internal), ra),
        Some(Reply::Internal)
    );
}

#[test]
fn hash_keys() {
    let r = req("GET", "/p/q", &[("X-User", "u1")]);
    let mut buf = [0u8; 16];
    assert_eq!(
        crate::routing::hash_key(&HashKey::Path, &r, None, &mut buf),
        b"/p/q"
    );
    let h = HashKey::Header(http::HeaderName::from_static("x-user"));
    assert_eq!(crate::routing::hash_key(&h, &r, None, &mut buf), b"u1");
    let ip = Some("10.1.2.3".parse().unwrap());
    assert_eq!(
        crate::routing::hash_key(&HashKey::ClientIp, &r, ip, &mut buf),
        &[10, 1, 2, 3]
    );
}

#[test]
fn http11_without_host_is_refused_and_hosts_are_canonical() {
    let gw = gateway(CONFIG);
    let mut ctx = new_ctx(&gw);
    let mut r = req("GET", "/api/x", &[]);
    r.remove_header("host");
    assert_eq!(
        gw.admit(&mut r, &mut ctx),
        Outcome::Respond(Reply::Refused(crate::edge::Refusal::MissingHost))
    );
    assert_eq!(
        ctx.error,
        Some(Failure::Refused(crate::edge::Refusal::MissingHost)),
        "the access log says why"
    );
    let mut ctx = new_ctx(&gw);
    let mut r = req("GET", "/api/x", &[("host", "GW.Example.:8000")]);
    assert_eq!(gw.admit(&mut r, &mut ctx), Outcome::Continue);
    assert_eq!(r.headers.get("host").unwrap(), "gw.example:8000");
}
