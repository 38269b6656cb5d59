//! `pom ca init` and `pom cert issue`: the mesh PKI commands. Exit 0 when written, 3 on any
//! error (an existing file without `--force` included), with the error on stderr.

use std::path::Path;

use super::EXIT_INTERNAL;
use crate::pki::{self, PkiError, Written};

pub(super) fn init(dir: &Path, days: u32, force: bool) -> anyhow::Result<u8> {
    Ok(report(pki::init_ca(dir, days, force), "mesh CA"))
}

pub(super) fn issue(
    name: &str,
    ca_dir: &Path,
    out: &Path,
    days: u32,
    force: bool,
) -> anyhow::Result<u8> {
    Ok(report(
        pki::issue(name, ca_dir, out, days, force),
        &format!("certificate for agent {name}"),
    ))
}

fn report(result: Result<Written, PkiError>, what: &str) -> u8 {
    match result {
        Ok(written) => {
            println!("{what}, valid until {}:", written.not_after.date());
            for file in written.files {
                println!("  {}", file.display());
            }
            0
        }
        Err(e) => {
            eprintln!("pom: {e}");
            EXIT_INTERNAL
        }
    }
}
