//! The process's client side below the proxy hooks: the connection loop (header deadlines,
//! idle timeout, connection cap).

mod conn;

pub use conn::{Connections, Limits};
