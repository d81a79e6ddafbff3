//! Hawk as the queue reads it from a request: the `Authorization` header, the `ext` it
//! carries (temporary credentials, authorized scopes), and bewits in a request-target. Any
//! text must be parsed or refused without panicking, and what parses must sign and re-encode
//! consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskfold::auth::bewit::{self, Bewit};
use taskfold::auth::ext::Ext;
use taskfold::auth::hawk::{self, Header, MacKind, RequestLine};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let request = RequestLine {
        method: "put",
        resource: "/api/queue/v1/task/fN1SbArXTPSVFNUvaOlinQ",
        host: "Queue.Example.com",
        port: 443,
    };

    // As an `Authorization` header.
    if let Ok(header) = Header::parse(&text) {
        assert!(!header.id.is_empty() && !header.mac.is_empty());
        if let Ok(ts) = header.timestamp() {
            let _ = hawk::check_timestamp(ts, 1_795_000_000_000);
        }
        let artifacts = header.artifacts(&request);
        let normalized = hawk::normalized_string(MacKind::Header, &artifacts);
        assert!(normalized.starts_with("hawk.1.header\n"));
        let mac = hawk::calculate_mac("a-secret", MacKind::Header, &artifacts);
        assert!(hawk::mac_is_valid(
            "a-secret",
            MacKind::Header,
            &artifacts,
            &mac
        ));
        if let Some(ext) = &header.ext
            && let Ok(ext) = Ext::decode(ext)
        {
            let _ = ext.issuer("static/taskcluster/root");
        }
    }
    let _ = Ext::decode(&text);

    // As a request-target that may carry a bewit, and as a bewit's value.
    let resource = format!("/{text}");
    let present = bewit::is_present(&resource);
    if let Some(found) = bewit::find(&resource) {
        assert!(present, "a bewit found is a bewit present: {resource:?}");
        assert!(found.resource_without_bewit.len() < resource.len());
        let _ = Bewit::decode(found.value);
    }
    if let Ok(decoded) = Bewit::decode(&text) {
        assert_eq!(Bewit::decode(&decoded.encode()).as_ref(), Ok(&decoded));
    }
});
