//! Local servers and certificates for the demo and the tests: real servers on real loopback
//! sockets, never mocks.
//!
//! - [`certs`]: a throw-away CA and leaf certificates of every kind a probe must judge (valid,
//!   expired, not yet valid, about to expire, wrong host, self-signed, proxy defaults).
//! - [`http`]: HTTP and HTTPS servers for an axum router, and raw TCP servers that misbehave
//!   (reset, black hole, garbage, endless body).
//! - [`dns`]: a small authoritative DNS server over UDP and TCP.
//!
//! `pom demo` runs on these, which is why they are part of the library and not only of the
//! tests.

pub mod certs;
pub mod dns;
pub mod http;
pub mod smtp;
