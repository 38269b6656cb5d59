//! The mesh PKI (DESIGN.md, "CLI"): `pom ca init` makes the mesh's own certificate authority,
//! `pom cert issue` makes one agent's certificate, in the layout of `/etc/pom/mesh/`.
//!
//! Everything is ECDSA P-256 (rcgen over ring). The CA may only sign leaves (path length 0), so
//! every chain is two certificates and the QUIC handshake stays small. A leaf names its agent in
//! both the subject CN and a DNS SAN, and carries both `serverAuth` and `clientAuth`: every agent
//! is a server to some peers and a client to others. Validity is always set explicitly (rcgen's
//! default runs to the year 4096), and a leaf never outlives its CA.
//!
//! Private keys are written 0600, created new; no existing file is ever replaced unless the
//! caller asks with `force`, and then it is replaced atomically (write aside, rename).

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// The CA's certificate file in a CA directory and in a node's directory.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key file in a CA directory.
pub const CA_KEY: &str = "ca.key";
/// A node's certificate file.
pub const NODE_CERT: &str = "node.crt";
/// A node's private key file.
pub const NODE_KEY: &str = "node.key";

/// The CA's default lifetime.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// A node certificate's default lifetime.
pub const DEFAULT_NODE_DAYS: u32 = 365;

/// Why a PKI command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file exists and `force` was not given.
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA files do not make a usable CA.
    #[error("{path}: not a usable mesh CA: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The agent name cannot be a certificate name.
    #[error("invalid agent name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A lifetime of zero days, or one beyond the CA's.
    #[error("invalid validity: {0}")]
    BadValidity(String),
    /// rcgen refused.
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What `init_ca` and `issue` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The files, in the order written.
    pub files: Vec<PathBuf>,
    /// The certificate's last day of validity.
    pub not_after: OffsetDateTime,
}

/// `pom ca init`: a new mesh CA in `dir` (`ca.crt`, `ca.key`), valid for `days`.
pub fn init_ca(dir: &Path, days: u32, force: bool) -> Result<Written, PkiError> {
    if days == 0 {
        return Err(PkiError::BadValidity("a CA needs at least one day".into()));
    }
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    refuse_existing(&[&cert_path, &key_path], force)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "PoM mesh CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "PoM");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    // An hour back, so a peer whose clock is a little behind accepts it at once.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key)?;
    create_dir(dir)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, force)?;
    Ok(Written {
        files: vec![key_path, cert_path],
        not_after: params.not_after,
    })
}

/// `pom cert issue`: a certificate for agent `name`, signed by the CA in `ca_dir`, written to
/// `out` as `ca.crt`, `node.crt` and `node.key` (the layout of `/etc/pom/mesh/`).
pub fn issue(
    name: &str,
    ca_dir: &Path,
    out: &Path,
    days: u32,
    force: bool,
) -> Result<Written, PkiError> {
    check_name(name)?;
    if days == 0 {
        return Err(PkiError::BadValidity(
            "a certificate needs at least one day".into(),
        ));
    }
    let (ca_cert_path, ca_key_path) = (ca_dir.join(CA_CERT), ca_dir.join(CA_KEY));
    let ca_pem = read(&ca_cert_path)?;
    let ca_key_pem = read(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::BadCa {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    let ca_not_after = ca_not_after(&ca_cert_path, &ca_pem, &ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::BadCa {
        path: ca_cert_path.clone(),
        reason: e.to_string(),
    })?;

    let (out_ca, out_cert, out_key) = (out.join(CA_CERT), out.join(NODE_CERT), out.join(NODE_KEY));
    refuse_existing(&[&out_ca, &out_cert, &out_key], force)?;
    let now = OffsetDateTime::now_utc();
    let not_after = now + Duration::days(i64::from(days));
    if not_after > ca_not_after {
        return Err(PkiError::BadValidity(format!(
            "{days} days would outlive the CA, which expires {}; issue fewer days or renew the CA",
            ca_not_after.date()
        )));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "PoM");
    params.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(
        |e: rcgen::Error| PkiError::BadName {
            name: name.to_owned(),
            reason: e.to_string(),
        },
    )?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = not_after;
    params.serial_number = Some(serial());
    let cert = params.signed_by(&key, &issuer)?;

    create_dir(out)?;
    write_file(&out_key, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_file(&out_cert, cert.pem().as_bytes(), 0o644, force)?;
    write_file(&out_ca, ca_pem.as_bytes(), 0o644, force)?;
    Ok(Written {
        files: vec![out_key, out_cert, out_ca],
        not_after,
    })
}

/// An agent name must be a DNS name: letters, digits and hyphens in dot-separated labels of at
/// most 63 characters, 253 in all. It is what peers match against `[[mesh.peers]] name`.
/// Checks that `name` can be an agent name in a mesh certificate: a DNS name.
pub(crate) fn check_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason: &str| PkiError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("expected 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("every dot-separated label needs 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad(
                "labels may hold only letters, digits and inner hyphens (it must be a DNS name)",
            ));
        }
    }
    Ok(())
}

/// The CA certificate's expiry, after checking that it is a CA and that `key` is its key.
fn ca_not_after(path: &Path, pem: &str, key: &KeyPair) -> Result<OffsetDateTime, PkiError> {
    let bad = |reason: String| PkiError::BadCa {
        path: path.to_owned(),
        reason,
    };
    let (_, parsed) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = parsed.parse_x509().map_err(|e| bad(e.to_string()))?;
    if !cert.is_ca() {
        return Err(bad("the certificate is not a CA".into()));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(format!("{CA_KEY} is not the key of this certificate")));
    }
    Ok(cert.validity().not_after.to_datetime())
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), PkiError> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(PkiError::Exists((*path).to_owned())),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` with `mode`. Without `force` the file is created new (an existing
/// one is an error, even one that appeared since the check). With `force` it is written aside
/// and renamed over the old one, so a reader never sees half a key.
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    let io_err = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let target = if force {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".new");
        PathBuf::from(aside)
    } else {
        path.to_owned()
    };
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&target).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            PkiError::Exists(path.to_owned())
        } else {
            io_err(e)
        }
    })?;
    // The mode given at creation is masked by the umask; a key must be 0600 regardless.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    if force {
        fs::rename(&target, path).map_err(io_err)?;
    }
    Ok(())
}

/// A random positive 16-byte serial.
fn serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_must_be_dns_names() {
        for ok in ["edge", "vps-1", "a.b.c", "x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-edge",
            "edge-",
            "a..b",
            "ed ge",
            "ünï",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
