//! Find, read and check the rules and site files that make a [`Policy`].

use std::path::{Path, PathBuf};

use crate::diag::ConfigError;
use crate::model::{load_model, BUNDLED_MODELS};
use crate::policy::{FileDigest, FileRole, Policy};
use crate::site::{load_site, model_id_of};

/// The example sites built into the binary: (name, path, text).
pub const BUNDLED_SITES: &[(&str, &str, &str)] = &[
    (
        "single-node",
        "deploy/sites/single-node.yaml",
        include_str!("../../deploy/sites/single-node.yaml"),
    ),
    (
        "multi-node",
        "deploy/sites/multi-node.yaml",
        include_str!("../../deploy/sites/multi-node.yaml"),
    ),
    (
        "dmz-proxy",
        "deploy/sites/dmz-proxy.yaml",
        include_str!("../../deploy/sites/dmz-proxy.yaml"),
    ),
    (
        "proxy-engine",
        "deploy/sites/proxy-engine.yaml",
        include_str!("../../deploy/sites/proxy-engine.yaml"),
    ),
    (
        "ha-proxy-engine",
        "deploy/sites/ha-proxy-engine.yaml",
        include_str!("../../deploy/sites/ha-proxy-engine.yaml"),
    ),
    (
        "ha-proxy-engine-scheduler",
        "deploy/sites/ha-proxy-engine-scheduler.yaml",
        include_str!("../../deploy/sites/ha-proxy-engine-scheduler.yaml"),
    ),
    (
        "ha-engine",
        "deploy/sites/ha-engine.yaml",
        include_str!("../../deploy/sites/ha-engine.yaml"),
    ),
    (
        "scale-out",
        "deploy/sites/scale-out.yaml",
        include_str!("../../deploy/sites/scale-out.yaml"),
    ),
];

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesSource {
    Bundled(&'static str),
    File(PathBuf),
}

/// A checked policy and where its parts were read from.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub site_path: PathBuf,
    pub rules: RulesSource,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit} bytes, the limit for a site or rules file")]
    TooLarge { path: String, limit: u64 },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "{path}:{line}:{column}: model: no bundled model `{id}`; bundled: {known} (or pass --rules FILE)"
    )]
    UnknownModel {
        path: String,
        line: u64,
        column: u64,
        id: String,
        known: String,
    },
}

/// Largest site or rules file read (README "Limits"): a site at the node
/// limit takes well under 1 MiB, and the bound
/// keeps `--site /dev/urandom` or a runaway generator from exhausting memory.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

fn read(path: &Path) -> Result<String, LoadError> {
    read_limited(path, MAX_CONFIG_BYTES)
}

/// Read at most `limit` bytes of `path` as UTF-8; a longer file (or an
/// endless one such as a device) is refused without reading more.
fn read_limited(path: &Path, limit: u64) -> Result<String, LoadError> {
    use std::io::Read;
    let err = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > limit {
        return Err(LoadError::TooLarge {
            path: path.display().to_string(),
            limit,
        });
    }
    String::from_utf8(bytes)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Load a site (a file, or the name of a bundled example site) and its
/// model (`rules`, or the bundled model the site names).
pub fn load_policy(site: &Path, rules: Option<&Path>) -> Result<Loaded, LoadError> {
    let (site_path, site_text) = match (site.exists(), bundled_site(site)) {
        (false, Some((path, text))) => (PathBuf::from(path), text.to_string()),
        _ => (site.to_path_buf(), read(site)?),
    };
    let mut sources = vec![digest(FileRole::Site, &site_path, &site_text)];
    let (model, source) = match rules {
        Some(r) => {
            let text = read(r)?;
            sources.push(digest(FileRole::Model, r, &text));
            (load_model(r, &text)?, RulesSource::File(r.to_path_buf()))
        }
        None => {
            let (id, line, column) =
                model_id_of(&site_text).unwrap_or_else(|| ("qlik-sense-enterprise".into(), 0, 0));
            let (id, file, text) = BUNDLED_MODELS
                .iter()
                .find(|(m, _, _)| *m == id)
                .ok_or_else(|| LoadError::UnknownModel {
                    path: site_path.display().to_string(),
                    line,
                    column,
                    id: id.clone(),
                    known: BUNDLED_MODELS
                        .iter()
                        .map(|m| m.0)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            sources.push(digest(FileRole::Model, Path::new(file), text));
            (load_model(Path::new(file), text)?, RulesSource::Bundled(id))
        }
    };
    let site = load_site(&site_path, &site_text, &model)?;
    let mut policy = Policy::compile(model, site, &site_path)?;
    policy.sources = sources;
    Ok(Loaded {
        policy,
        site_path,
        rules: source,
    })
}

/// The SHA-256 of a file's text as read, in lowercase hex.
fn digest(role: FileRole, path: &Path, text: &str) -> FileDigest {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    FileDigest {
        role,
        path: path.display().to_string(),
        sha256: d.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn bundled_site(name: &Path) -> Option<(&'static str, &'static str)> {
    let n = name.to_str()?;
    BUNDLED_SITES
        .iter()
        .find(|(s, p, _)| *s == n || *p == n)
        .map(|(_, p, t)| (*p, *t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_tests::Scratch;

    /// An unknown `model:` is located like every other site problem:
    /// file, line, column and field.
    #[test]
    fn unknown_model_names_line_column_and_field() {
        let dir = Scratch::new("unknown-model");
        let f = dir.path().join("unknown-model.yaml");
        std::fs::write(&f, "site: t\nmodel: nope\nnodes: []\n").unwrap();
        let e = load_policy(&f, None).unwrap_err();
        let text = e.to_string();
        let want = format!("{}:2:8: model: no bundled model `nope`", f.display());
        assert!(text.starts_with(&want), "{text}");
    }

    /// An endless or oversized file is refused after reading the limit,
    /// naming the file and the limit.
    #[test]
    fn oversized_and_endless_files_are_refused() {
        let e = read_limited(Path::new("/dev/zero"), 1 << 16).unwrap_err();
        assert!(
            matches!(e, LoadError::TooLarge { limit, .. } if limit == 1 << 16),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with("/dev/zero: larger than 65536 bytes"));
        let dir = Scratch::new("big");
        let f = dir.path().join("big.yaml");
        std::fs::write(&f, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let e = load_policy(&f, None).unwrap_err();
        let at_limit = dir.path().join("ok.yaml");
        std::fs::write(&at_limit, vec![b'#'; 10]).unwrap();
        assert_eq!(read_limited(&at_limit, 10).unwrap().len(), 10);
        assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
    }
}
