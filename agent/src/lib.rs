//! The PoM agent: configuration, probes, and the command-line surfaces built on them.
//!
//! The binary (`main.rs`) is thin: it parses the command line and hands over to [`cli`].
//! Everything else lives here so that tests drive the same code the binary runs.

pub mod alert;
pub mod api;
pub mod board;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod mesh;
pub mod monitor;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod runner;
pub mod scheduler;
pub mod store;
pub mod systemd;
pub mod testbed;
