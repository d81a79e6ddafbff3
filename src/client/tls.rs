//! TLS for Taskfold's clients (the worker, the CLI, the load generators) when a deployment's
//! root URL is `https://`, as behind a TLS-terminating proxy: one rustls configuration for the
//! HTTP client and the websockets alike. It trusts the system's root certificates; as with
//! OpenSSL, `SSL_CERT_FILE` and `SSL_CERT_DIR` name others (a private CA). A REST task may
//! add a private CA of its own ([`config_trusting`]).

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

/// The configuration, built once, when a client first needs it: a deployment reached over
/// plain HTTP never reads the system's certificates.
pub fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build).clone()
}

fn build() -> Result<Arc<ClientConfig>, String> {
    let (roots, errors) = system_roots();
    if roots.is_empty() {
        return Err(format!(
            "no trusted root certificates to check the server's against (install \
             ca-certificates, or name a file of them in SSL_CERT_FILE){}{}",
            if errors.is_empty() { "" } else { ": " },
            errors.join("; ")
        ));
    }
    with_roots(roots.clone())
}

/// A configuration that trusts `extra` (a private CA's certificates, in PEM) besides the
/// system's roots, for a REST task's `cacert`.
pub fn config_trusting(extra: &str) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = system_roots().0.clone();
    let mut added = 0;
    for certificate in CertificateDer::pem_slice_iter(extra.as_bytes()) {
        let certificate = certificate.map_err(|error| format!("not PEM certificates: {error}"))?;
        roots
            .add(certificate)
            .map_err(|error| format!("not a usable CA certificate: {error}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("holds no PEM certificate".to_owned());
    }
    with_roots(roots)
}

/// The system's root certificates, read once, and what could not be read.
fn system_roots() -> &'static (rustls::RootCertStore, Vec<String>) {
    static ROOTS: OnceLock<(rustls::RootCertStore, Vec<String>)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (_, unusable) = roots.add_parsable_certificates(found.certs);
        if unusable > 0 {
            tracing::debug!(unusable, "root certificates skipped");
        }
        let errors = found.errors.iter().map(ToString::to_string).collect();
        (roots, errors)
    })
}

fn with_roots(roots: rustls::RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
