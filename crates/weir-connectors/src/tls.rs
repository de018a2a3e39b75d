//! Client TLS of the network connectors, on rustls with ring (the project's one TLS stack).
//!
//! A stream connects over TLS when its URL says so (`mqtts://`, `amqps://`, `tls://` for NATS,
//! `https://` for webhooks). It trusts the system's root certificates, or instead those of
//! `ca_file`; `cert_file` and `key_file` give it a client certificate for brokers that ask for
//! one (mutual TLS). The three are paths on the machine the rule runs on, named by the rule's
//! author: each must be absolute and plain (no `..`), and is read at most 1 MiB and only as PEM,
//! so no part of another file ever shows in an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[cfg(any(feature = "mqtt", feature = "amqp", feature = "nats", feature = "http"))]
use crate::options::Opts;
use crate::spec::{Kind, OptionSpec};

/// The TLS options of every network connector.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "ca_file",
        kind: Kind::Path,
        default: None,
        doc: "TLS: PEM certificates to trust instead of the system's roots",
    },
    OptionSpec {
        name: "cert_file",
        kind: Kind::Path,
        default: None,
        doc: "TLS: a PEM client certificate chain, for servers that ask for one (needs key_file)",
    },
    OptionSpec {
        name: "key_file",
        kind: Kind::Path,
        default: None,
        doc: "TLS: the PEM key of cert_file",
    },
];

/// The TLS settings of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Whether the connection is encrypted at all (from the URL's scheme).
    pub enabled: bool,
    /// Certificates trusted instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    /// Reads `ca_file`, `cert_file` and `key_file`; `enabled` comes from the URL. The files
    /// without TLS are refused rather than ignored.
    #[cfg(any(feature = "mqtt", feature = "amqp", feature = "nats", feature = "http"))]
    pub(crate) fn from_opts(o: &mut Opts, enabled: bool, secure_scheme: &str) -> TlsOptions {
        let path = |o: &mut Opts, key: &str| -> Option<PathBuf> {
            let value = o.get(key)?.to_owned();
            if !enabled {
                o.fault(
                    key,
                    format!("option '{key}' needs a TLS connection: the url must start with {secure_scheme}"),
                );
                return None;
            }
            match plain_absolute(&value) {
                Ok(p) => Some(p),
                Err(why) => {
                    o.fault(key, format!("option '{key}' = '{value}': {why}"));
                    None
                }
            }
        };
        let ca_file = path(o, "ca_file");
        let cert = path(o, "cert_file");
        let key = path(o, "key_file");
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                o.fault(
                    "cert_file",
                    "a client certificate needs key_file too".into(),
                );
                None
            }
            (None, Some(_)) => {
                o.fault("key_file", "a client key needs cert_file too".into());
                None
            }
        };
        TlsOptions {
            enabled,
            ca_file,
            identity,
        }
    }

    /// The certificates this stream trusts: those of `ca_file`, else the system's.
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(file) => {
                for cert in certificates(file, "ca_file")? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "no system root certificates found: name the broker's CA in ca_file".into(),
                    );
                }
            }
        }
        Ok(roots)
    }

    /// A rustls client configuration with these settings.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(self.roots()?);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certificates(cert, "cert_file")?;
                let key = private_key(key, "key_file")?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("cert_file/key_file: {e}"))
            }
        }
    }

    /// The text of `ca_file`, for clients that take PEM rather than a configuration.
    pub fn ca_pem(&self) -> Result<Option<String>, String> {
        let Some(file) = &self.ca_file else {
            return Ok(None);
        };
        // Parsed first: only certificates are ever handed on.
        certificates(file, "ca_file")?;
        weir_core::files::read_settings_file(file, "ca_file")
            .and_then(|b| {
                String::from_utf8(b)
                    .map_err(|_| format!("ca_file {}: not PEM text", file.display()))
            })
            .map(Some)
    }
}

/// `value` as a path if it is absolute and has no `.` or `..` components.
#[cfg(any(feature = "mqtt", feature = "amqp", feature = "nats", feature = "http"))]
pub(crate) fn plain_absolute(value: &str) -> Result<PathBuf, &'static str> {
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err("give an absolute path");
    }
    // Segments of the text itself: `components()` would quietly drop a `.`.
    if value.chars().any(char::is_control) || value.split('/').any(|s| s == "." || s == "..") {
        return Err("the path must not hold '.', '..' or control characters");
    }
    Ok(path.to_owned())
}

/// The PEM certificates of `file`; at least one.
pub fn certificates(file: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = weir_core::files::read_settings_file(file, option)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{option} {}: not PEM certificates", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{option} {}: no certificate in it", file.display()));
    }
    Ok(certs)
}

/// The PEM private key of `file`.
pub fn private_key(file: &Path, option: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = weir_core::files::read_settings_file(file, option)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| format!("{option} {}: no PEM private key in it", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "mqtt", feature = "amqp", feature = "nats", feature = "http"))]
    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert!(plain_absolute("/etc/ssl/ca.pem").is_ok());
        for bad in ["ca.pem", "../ca.pem", "/etc/../root/key", "/a/./b", "/a\nb"] {
            assert!(plain_absolute(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn files_that_are_not_pem_say_so_without_their_content() {
        let dir = std::env::temp_dir().join(format!("weir-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret.txt");
        std::fs::write(&file, "root:x:0:0:the secret line\n").unwrap();
        let err = certificates(&file, "ca_file").unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        assert!(!err.contains("secret line"), "{err}");
        let err = private_key(&file, "key_file").unwrap_err();
        assert!(!err.contains("secret line"), "{err}");
        std::fs::write(
            &file,
            vec![b'-'; (weir_core::files::MAX_SETTINGS_FILE + 10) as usize],
        )
        .unwrap();
        assert!(certificates(&file, "ca_file")
            .unwrap_err()
            .contains("larger"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
