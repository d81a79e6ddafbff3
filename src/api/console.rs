//! The web console: the pages at `<rootUrl>/` (`/tasks/<taskId>`, `/groups/<taskGroupId>`,
//! `/queues`, …), one page application built from `web/` by `build.rs` and embedded in the
//! binary, gzipped too. Every page route answers the same `index.html`, whose script reads the
//! address and calls the API like any client (anonymously, or signing with Hawk the
//! credentials a person typed in, which stay in the browser's session storage).
//!
//! People type access tokens into the console, so it runs only its own script, cannot be
//! framed, and talks only to this queue. `[console] dir` serves the files from a directory
//! instead, read on each request, for work on the console itself.

use std::path::PathBuf;
use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Data, get};
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::response;
use super::server::State;

/// The first segment of every page's path; `/` is the home page.
pub const PAGES: [&str; 8] = [
    "tasks", "groups", "queues", "index", "hooks", "secrets", "clients", "roles",
];

/// Where the console's script and style are, under the root URL.
const ASSETS: &str = "/console";

/// One built file of the console, and its gzipped copy.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    plain: &'static [u8],
    gzipped: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            plain: include_bytes!(concat!(env!("OUT_DIR"), "/console/", $name)),
            gzipped: include_bytes!(concat!(env!("OUT_DIR"), "/console/", $name, ".gz")),
        }
    };
}

static BUILT: [Asset; 3] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.js", "text/javascript; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
];

/// The entity tag of each built file: its contents' digest.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    BUILT
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.plain);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// The console's routes: its pages and its files.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/", get().to(page))
        .route(&format!("{ASSETS}/{{name}}"), get().to(asset));
    for section in PAGES {
        config
            .route(&format!("/{section}"), get().to(page))
            .route(&format!("/{section}/{{rest:.*}}"), get().to(page));
    }
}

/// Where `[console] dir` says the files are, when it does.
fn directory(state: &State) -> Option<&PathBuf> {
    Some(&state.console_dir).filter(|dir| !dir.as_os_str().is_empty())
}

/// Every page: `index.html`, with the headers that keep it to itself.
async fn page(state: Data<State>, request: HttpRequest) -> HttpResponse {
    let mut response = serve(&state, &request, "index.html").await;
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src 'self' {}; img-src 'self' data: blob:; font-src 'self' data:; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        super::sessions::page::websocket_origin(&state.root_url),
    );
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `GET /console/<name>`: the script or the style.
async fn asset(state: Data<State>, request: HttpRequest) -> HttpResponse {
    match request.match_info().get("name") {
        Some(name @ ("console.js" | "console.css")) => serve(&state, &request, name).await,
        _ => response::not_found(request).await,
    }
}

/// One of the console's files: the built-in one (gzipped to clients that take it, and not
/// sent again to those that have it), or the one in `[console] dir`.
async fn serve(state: &State, request: &HttpRequest, name: &str) -> HttpResponse {
    let Some(index) = BUILT.iter().position(|asset| asset.name == name) else {
        return response::not_found(request.clone()).await;
    };
    let asset = &BUILT[index];
    let mut builder = HttpResponse::Ok();
    builder
        .content_type(asset.content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if let Some(dir) = directory(state) {
        return match tokio::fs::read(dir.join(name)).await {
            Ok(bytes) => builder.body(bytes),
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), name, "serving the console ([console] dir)");
                response::not_found(request.clone()).await
            }
        };
    }
    let etag = &ETAGS[index];
    builder
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::VARY, "Accept-Encoding"));
    let cached = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if cached {
        return builder
            .status(actix_web::http::StatusCode::NOT_MODIFIED)
            .finish();
    }
    if accepts_gzip(request) {
        builder
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(asset.gzipped)
    } else {
        builder.body(asset.plain)
    }
}

fn accepts_gzip(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                param
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_file_is_there() {
        for asset in &BUILT {
            assert!(!asset.plain.is_empty(), "{} is empty", asset.name);
            assert!(asset.gzipped.starts_with(&[0x1f, 0x8b]), "{}", asset.name);
        }
        let page = std::str::from_utf8(BUILT[0].plain).unwrap();
        assert!(page.contains(&format!("{ASSETS}/console.js")));
        assert!(page.contains(&format!("{ASSETS}/console.css")));
    }
}
