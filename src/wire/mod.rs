//! Pure wire parsers: what the bytes a client or server sent say, with no I/O. The proxy reads the bytes and
//! asks these; each is fuzzed (`fuzz/`).

pub mod client_hello;
pub mod proxy_header;
pub mod request_head;
pub mod request_stream;
pub mod server_hello;
