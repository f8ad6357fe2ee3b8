//! SIP over TLS (RFC 3261 §26.2, RFC 5630): the certificate screenpop presents on its TLS
//! listener, reloaded from disk on SIGHUP without touching connections already up, and the trust
//! anchors it checks when it opens TLS to a trunk or registrar itself.
//!
//! rustls with the ring provider: no OpenSSL to keep patched, and no C toolchain beyond what the
//! build already needs. A failed handshake costs its connection only and is counted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};

/// The `[tls]` section of a profile.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// TCP port of the TLS listener, on the SIP address (5061 by convention, RFC 3261 §19.1.2).
    #[serde(default = "default_port")]
    pub port: u16,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM trust anchors for TLS that screenpop opens (trunks, registrars); the system's store
    /// (`/etc/ssl/certs`) is used as well.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_port() -> u16 {
    5061
}

/// Server and client TLS configuration; clones share the server side's certificate, which
/// [`Tls::reload`] replaces for every later handshake.
#[derive(Clone)]
pub struct Tls {
    settings: TlsSettings,
    server: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    client: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Reads the certificate, key and trust anchors; any problem is an error naming the file.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Tls> {
        Ok(Tls {
            server: Arc::new(RwLock::new(Arc::new(server_config(settings)?))),
            client: Arc::new(client_config(settings.ca.as_deref())?),
            settings: settings.clone(),
        })
    }

    /// Re-reads the certificate and key (a renewed certificate): new handshakes use them,
    /// connections already up keep theirs. On error the old ones stay in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = Arc::new(server_config(&self.settings)?);
        let mut slot = self.server.write().unwrap_or_else(|p| p.into_inner());
        *slot = fresh;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.settings.port
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self
            .server
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(cfg)
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(s: &TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    let certs = read_certs(&s.cert)?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .with_context(|| format!("tls key {}", s.key.display()))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "tls certificate {} does not go with key {}",
                s.cert.display(),
                s.key.display()
            )
        })
}

fn client_config(ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // The system store may be missing or partly unreadable on a minimal machine: what loads
    // is used, and a profile's own `ca` is what trunks on a private PKI need anyway.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .with_context(|| format!("tls ca {}", ca.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("tls certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls certificate {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls certificate {}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
}

/// The name to check a server's certificate against: a host name, or an IP address (which
/// must then be in the certificate's subjectAltName).
pub(crate) fn server_name(host: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings {
            port: 5061,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: None,
        }
    }

    fn write_cert(dir: &Path, name: &str) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
    }

    #[test]
    fn loads_reloads_and_names_the_bad_file() {
        let dir = std::env::temp_dir().join(format!("screenpop-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = settings(&dir);
        let err = Tls::load(&s).err().unwrap();
        assert!(format!("{err:#}").contains("cert.pem"), "{err:#}");
        write_cert(&dir, "sip.example");
        let tls = Tls::load(&s).unwrap();
        // A broken renewal keeps the certificate in use.
        std::fs::write(dir.join("key.pem"), "not a key").unwrap();
        assert!(tls.reload().is_err());
        write_cert(&dir, "sip2.example");
        tls.reload().unwrap();
        assert!(server_name("127.0.0.1").is_some());
        assert!(server_name("[::1]").is_some());
        assert!(server_name("pbx.example.com").is_some());
        std::fs::remove_dir_all(&dir).ok();
    }
}
