//! What egressd tells the outside world about each connection.

pub mod batch;
pub mod last_match;
pub mod log;
pub mod metrics;
