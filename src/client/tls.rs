//! TLS for Taskfold's clients (the worker, the CLI, the load generators) when a deployment's
//! root URL is `https://`, as behind a TLS-terminating proxy: one rustls configuration for the
//! HTTP client and the websockets alike. It trusts the system's root certificates; as with
//! OpenSSL, `SSL_CERT_FILE` and `SSL_CERT_DIR` name others (a private CA).

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

/// The configuration, built once, when a client first needs it: a deployment reached over
/// plain HTTP never reads the system's certificates.
pub fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build).clone()
}

fn build() -> Result<Arc<ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no trusted root certificates to check the server's against (install \
             ca-certificates, or name a file of them in SSL_CERT_FILE){}{}",
            if errors.is_empty() { "" } else { ": " },
            errors.join("; ")
        ));
    }
    if unusable > 0 {
        tracing::debug!(unusable, "root certificates skipped");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
