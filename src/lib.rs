//! An API gateway and edge proxy on Cloudflare's Pingora.
//!
//! - [`config`]: the YAML file, parsed strictly and validated, every problem with path and line
//! - [`app`]: builds the Pingora server and its services from a config
//! - [`proxy`]: the `ProxyHttp` hooks every request passes through
//! - [`auth`]: JWT and API keys -> a principal (consumer + tier)
//! - [`correlation`]: request ids and W3C trace context
//! - [`edge`]: path normalisation and header-name rules, before any decision on a request
//! - [`client_ip`]: the client address, through trusted proxies
//! - [`clock`]: monotonic nanoseconds, precise and coarse
//! - [`ratelimit`]: token buckets, exact across instances through Redis leases
//! - [`reload`]: SIGHUP re-reads the config and swaps routes, pools and auth at once
//! - [`routing`]: host + path-prefix routes, upstream pools, health
//! - [`observability`]: metrics, access log, admin endpoints
//! - [`dashboard`]: the live page on the admin listener and its `/api/stats`
//! - [`server`]: the connection loop (header deadlines, idle timeout, connection cap) and signals
//! - [`drain`]: shutting down: draining flag and in-flight request count

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod correlation;
pub mod dashboard;
pub mod drain;
pub mod edge;
pub mod observability;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod server;
