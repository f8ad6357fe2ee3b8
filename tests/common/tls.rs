//! TLS for tests: certificates made at test time (rcgen) and a blocking rustls client that
//! trusts exactly the certificate it is given.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
};

/// A certificate and key written as PEM files.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The DER, to compare with what a server presents.
    pub der: Vec<u8>,
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as `dir/{stem}.pem` and
/// `dir/{stem}.key` (the key file is replaced first, so a reader never pairs new with old
/// for long).
pub fn make_cert(dir: &Path, stem: &str) -> TestCert {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let c = rcgen::generate_simple_self_signed(names).expect("test certificate");
    let (cert, key) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&key, c.key_pair.serialize_pem()).expect("write key");
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    TestCert {
        cert,
        key,
        der: c.cert.der().to_vec(),
    }
}

/// A client config trusting only the certificate(s) in `ca`.
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(c.expect("ca cert")).expect("ca cert");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `127.0.0.1:port` and completes the handshake (checking the server's
/// certificate for 127.0.0.1).
pub fn connect(port: u16, cfg: &Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    let name = ServerName::try_from("127.0.0.1").expect("ip name");
    let conn = rustls::ClientConnection::new(cfg.clone(), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The DER of the certificate the server presented.
pub fn presented(s: &TlsStream) -> Vec<u8> {
    s.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// Sends `msg` and reads one response (what one read returns).
pub fn exchange(s: &mut TlsStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    s.flush()?;
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
