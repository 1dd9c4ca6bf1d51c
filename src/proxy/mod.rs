//! The proxy: listeners, connections and requests, the I/O around the pure verdict in [`crate::policy`].
//!
//! - `server`: bind the listeners, accept, admit under the limits (`admission`), the TLS listener's
//!   handshake, the first request head (`head`), then CONNECT (`connect`) or forwarding (`forward`);
//!   drain on shutdown.
//! - `ctx`: one configuration generation and the steps a request takes through it; `live`: what outlives
//!   a reload (the generation in force, swapped as one value, and the connection limits).
//! - CONNECT: `connect` decides and dials, `peek` reads the first bytes, `retry` replays the hello and
//!   judges a second one after a HelloRetryRequest, `splice` (with `pipe`) moves the bytes.
//! - Plain HTTP: `forward` (absolute-form requests, CONNECT after them), `http1` (serving shared with the
//!   transparent HTTP listener), `upstream` (the pooled clients), `body` (counted bodies).
//! - Transparent mode: `transparent` (TLS, named by the SNI), `transparent_http` (named by the Host
//!   header), `redirect` and `original_dst` (where a redirected connection was going).
//! - Parent proxies: `parent` (the route, and tunnels through a parent), `parent_http` (plain HTTP through
//!   one), `parent_reach` (the order parents are tried in, and a TCP or TLS connection to one),
//!   `parent_health` (which failed recently).
//! - `dial`: resolve → check every address → connect; `upstream_io`: a TCP or TLS upstream; `respond`:
//!   refusals on the wire; `accept` and `counted_client`: accepted sockets; `client_io`: what each client
//!   stream type can do; `password_checks`: turns for argon2 checks.

mod accept;
mod admission;
mod balancer;
mod body;
mod client_io;
mod connect;
mod counted_client;
mod ctx;
pub mod dial;
mod forward;
pub mod head;
mod http1;
mod live;
mod original_dst;
mod parent;
mod parent_health;
mod parent_http;
mod parent_reach;
mod password_checks;
mod peek;
mod pipe;
mod redirect;
mod respond;
mod retry;
pub mod server;
pub mod splice;
mod transparent;
mod transparent_http;
mod upstream;
mod upstream_io;

pub use client_io::ClientIo;
pub use ctx::Ctx;
pub use live::Live;
pub use respond::REASON_HEADER;
pub use server::{Bound, ListenerKind};
