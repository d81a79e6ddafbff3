//! The browser page for sessions (`/shell/?taskId=…&runId=…[&socketUrl=…]`), built into the
//! binary, and xterm.js beside it at `/shell/xterm/`, served from `[sessions] xterm_dir`
//! (Debian's `libjs-xterm`, or the npm package).

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};

use crate::api::response;
use crate::api::server::State;

const PAGE: &str = include_str!("../shell/index.html");

/// `GET /shell/`.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
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
        return response::not_found();
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
            response::not_found()
        }
    }
}
