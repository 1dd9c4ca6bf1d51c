//! The load harness behind `egressd-load` (README "Performance").
//!
//! The statistics, the proxy RSS and CPU readings and the table/JSON rendering are plain code, always compiled and
//! unit-tested. The TLS origin, the clients, the scenarios and the proxy launchers need the `load` feature
//! (rustls, tokio-rustls, rcgen), so the normal build does not carry them.

pub mod process_tree;
pub mod report;
pub mod stats;

#[cfg(feature = "load")]
pub mod client;
#[cfg(feature = "load")]
pub mod dns;
#[cfg(feature = "load")]
pub mod origin;
#[cfg(feature = "load")]
pub mod run;
#[cfg(feature = "load")]
pub mod targets;
