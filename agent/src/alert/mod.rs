//! Alerting: what a notification says ([`payload`]) and how it reaches people ([`channel`]).
//!
//! The decisions (when to fire, repeat, resolve, fold or hold) are pure functions in
//! `mesh-proto`, so every agent of a mesh reaches the same ones; this module only carries them
//! out.

pub mod channel;
pub mod outbox;
pub mod payload;

pub use payload::Alert;
