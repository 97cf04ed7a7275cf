//! The process's client side below the proxy hooks: the connection loop (header deadlines,
//! idle timeout, connection cap) and the signals that drain it.

mod conn;
mod signals;

pub use conn::{Connections, Limits};
pub use signals::Signals;
