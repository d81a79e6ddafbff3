//! The browser page for sessions (`/shell/?taskId=…&runId=…[&socketUrl=…]`), built into the
//! binary, and xterm.js beside it at `/shell/xterm/`, served from `[sessions] xterm_dir`
//! (Debian's `libjs-xterm`, or the npm package).
//!
//! People type access tokens into the page, so it runs only its own scripts (its inline ones
//! by hash, and xterm.js), cannot be framed, and talks only to this queue: a `socketUrl`
//! elsewhere is refused here and by the page's script.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::api::response;
use crate::api::server::State;

const PAGE: &str = include_str!("../shell/index.html");

/// The CSP sources of the page's inline scripts, `'sha256-…'` each.
static INLINE_SCRIPT_HASHES: LazyLock<String> = LazyLock::new(|| inline_script_hashes(PAGE));

fn inline_script_hashes(page: &str) -> String {
    let mut sources = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<script>") {
        let script = &rest[start + "<script>".len()..];
        let Some(end) = script.find("</script>") else {
            break;
        };
        let digest = Sha256::digest(&script.as_bytes()[..end]);
        sources.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &script[end..];
    }
    sources.join(" ")
}

/// The websocket origin of the queue at `root_url` (`ws://host:port`).
pub(crate) fn websocket_origin(root_url: &str) -> String {
    let url = super::websocket_url(root_url);
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
        None => url,
    }
}

/// `GET /shell/`.
pub async fn page(state: Data<State>, request: HttpRequest) -> HttpResponse {
    let own_sockets = format!("{}/", super::websocket_url(&state.root_url));
    let foreign_socket = form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(name, _)| name == "socketUrl")
        .filter(|(_, url)| !url.starts_with(&own_sockets));
    if foreign_socket.is_some() {
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body(format!(
                "refused: socketUrl must be a session socket of this queue, under {own_sockets}\n"
            ));
    }
    let policy = format!(
        "default-src 'none'; script-src 'self' {}; style-src 'self' 'unsafe-inline'; \
         connect-src 'self' {}; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        *INLINE_SCRIPT_HASHES,
        websocket_origin(&state.root_url),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The address holds the session's single-use ticket.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(PAGE)
}

/// `GET /shell`: the page lives under the directory, for its relative links. The redirect is
/// relative too (`shell/` from `…/shell`), so it stays right behind a proxy that serves the
/// queue under a path of its own.
pub async fn page_directory(request: HttpRequest) -> HttpResponse {
    let query = request.query_string();
    let location = if query.is_empty() {
        "shell/".to_owned()
    } else {
        format!("shell/?{query}")
    };
    HttpResponse::MovedPermanently()
        .insert_header(("Location", location))
        .finish()
}

/// `GET /shell/xterm/<path>`: a file of xterm.js.
pub async fn xterm(state: Data<State>, request: HttpRequest) -> HttpResponse {
    let path = request.match_info().get("path").unwrap_or_default();
    let allowed = !path.is_empty()
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".")
        && (path.ends_with(".js") || path.ends_with(".css") || path.ends_with(".map"));
    if !allowed {
        return response::not_found(request.clone()).await;
    }
    // Debian's package has the files side by side; the npm package has them in `lib/` and
    // `css/`.
    let dir = &state.sessions.settings.xterm_dir;
    let candidates = [
        dir.join(path),
        dir.join("lib").join(path),
        dir.join("css").join(path),
    ];
    let mut found = None;
    for file in &candidates {
        if let Ok(bytes) = tokio::fs::read(file).await {
            found = Some((file, bytes));
            break;
        }
    }
    match found.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)) {
        Ok((file, bytes)) => {
            let mime = mime_guess::from_path(file).first_or_octet_stream();
            HttpResponse::build(StatusCode::OK)
                .content_type(mime.essence_str())
                .insert_header(("Cache-Control", "public, max-age=3600"))
                .body(bytes)
        }
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(), path, "serving xterm.js ([sessions] xterm_dir)");
            response::not_found(request.clone()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inline_script_of_the_page_is_hashed() {
        let hashes = inline_script_hashes(
            "<p><script>a()</script><script src=x></script><script>b()</script>",
        );
        assert_eq!(hashes.matches("'sha256-").count(), 2);
        assert_eq!(
            PAGE.matches("<script>").count(),
            INLINE_SCRIPT_HASHES.matches("'sha256-").count()
        );
    }

    #[test]
    fn the_websocket_origin_drops_the_path() {
        assert_eq!(
            websocket_origin("https://tc.example.com/queue"),
            "wss://tc.example.com"
        );
        assert_eq!(
            websocket_origin("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080"
        );
    }
}
