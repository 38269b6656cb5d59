//! Reads `pom.toml` and turns every problem into a `file:line:column: message` line.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::locate::{line_col, span_of};
use super::{Config, validate};

/// The largest config file accepted; anything bigger is certainly not a config.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// One problem in a config file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", Located { file, problems })]
    Invalid {
        /// The file, as named to the user.
        file: String,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

struct Located<'a> {
    file: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

/// Reads, parses and validates the config at `path`. Relative paths inside it (`ca_file`, the
/// mesh certificates, `data_dir`) are taken relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    let file = path.display().to_string();
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(
            &file,
            1,
            1,
            format!("the file is larger than {MAX_CONFIG_BYTES} bytes; expected a pom.toml"),
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let (line, column) = line_col(&prefix, valid);
            return Err(invalid(
                &file,
                line,
                column,
                "expected UTF-8 text".to_owned(),
            ));
        }
    };
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    parse(&text, &file, base)
}

/// Parses and validates config `text`; `file` names it in messages, and relative paths are
/// resolved against `base` when given.
pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| {
        let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
        invalid(file, line, column, e.message().trim_end().to_owned())
    })?;
    config.shared_hash = shared_hash(text);
    if let Some(base) = base {
        resolve_paths(&mut config, base);
    }
    validate(&config).map_err(|problems| {
        let mut located: Vec<Problem> = problems
            .into_iter()
            .map(|p| {
                let (line, column) = line_col(text, span_of(text, &p.path.0).start);
                Problem {
                    line,
                    column,
                    message: format!("{}: {}", p.path, p.message),
                }
            })
            .collect();
        located.sort_by_key(|p| (p.line, p.column));
        ConfigError::Invalid {
            file: file.to_owned(),
            problems: located,
        }
    })?;
    Ok(config)
}

/// The hash of what every agent must agree on to reach the same verdicts: the targets, checks,
/// heartbeats and alert rules, that is the TOML document without `[agent]` and `[mesh]` (which
/// differ per host: names, paths, addresses), re-serialized in key order (so comments, layout
/// and key order do not count).
fn shared_hash(text: &str) -> [u8; 32] {
    let Ok(mut doc) = toml::from_str::<toml::Table>(text) else {
        return [0; 32];
    };
    doc.remove("agent");
    doc.remove("mesh");
    let canonical = toml::to_string(&doc).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn invalid(file: &str, line: usize, column: usize, message: String) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        problems: vec![Problem {
            line,
            column,
            message,
        }],
    }
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    resolve(&mut config.agent.data_dir);
    if let Some(mesh) = &mut config.mesh {
        resolve(&mut mesh.ca_cert);
        resolve(&mut mesh.cert);
        resolve(&mut mesh.key);
    }
    for target in &mut config.targets {
        if let Some(ca) = &mut target.ca_file {
            resolve(ca);
        }
    }
}
