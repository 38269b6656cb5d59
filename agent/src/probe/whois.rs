//! PLACEHOLDER replaced in this session by the real RDAP/WHOIS probe.
use super::{Outcome, ProbeContext};
use crate::plan::WhoisSpec;
/// RDAP bootstrap cache.
#[derive(Debug, Default)]
pub struct RdapBootstrap;
/// Runs one WHOIS check.
pub async fn probe(spec: &WhoisSpec, _ctx: &ProbeContext) -> Outcome {
    Outcome::error(format!("{}: whois not built yet", spec.domain))
}
