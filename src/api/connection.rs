//! Noticing that an HTTP client went away while its request waits (a parked claimWork): the
//! server keeps a duplicate of each connection's socket, and a waiting handler watches it for
//! the end of the client's side.

use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;

/// A duplicate of a connection's socket, kept in the connection's data.
#[derive(Clone)]
struct ClientSocket(Rc<OwnedFd>);

/// For `HttpServer::on_connect`: keeps a duplicate of every TCP connection's socket.
pub fn remember_socket(connection: &dyn std::any::Any, data: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(socket) = stream.as_fd().try_clone_to_owned()
    {
        data.insert(ClientSocket(Rc::new(socket)));
    }
}

/// Resolves once the client of `request` has closed its side of the connection (or the
/// connection broke); never, if that cannot be watched. Reading is left to the server: this
/// only peeks, and stops watching a client that sends more (it is there).
pub fn client_gone(request: &HttpRequest) -> impl Future<Output = ()> + use<> {
    let socket = request.conn_data::<ClientSocket>().cloned();
    async move {
        // Duplicated only once the wait is watched, so a claim that does not park costs nothing.
        let Some(socket) = socket.and_then(|socket| socket.0.try_clone().ok()) else {
            return std::future::pending().await;
        };
        let socket = std::net::TcpStream::from(socket);
        let watched = socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(socket));
        let Ok(socket) = watched else {
            return std::future::pending().await;
        };
        let mut byte = [0u8; 1];
        match socket.peek(&mut byte).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }
}

/// Descriptors left for everything but waiting claims: the listener, the log's files, blob
/// and live-log files, the Kafka client, connections that are not waiting.
const SPARE_DESCRIPTORS: u64 = 64;
/// What one waiting claimWork holds: its socket, the duplicate kept for its connection, and
/// the one being watched.
const DESCRIPTORS_PER_WAITING_CLAIM: u64 = 3;

/// Counts the claimWork calls waiting at once and refuses the one past the bound, so that
/// parked claims cannot take the descriptors `accept` needs.
pub struct WaitingClaims {
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    bound: usize,
}

/// A claimWork counted as waiting until it is dropped.
pub struct WaitingClaim(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WaitingClaim {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WaitingClaims {
    /// At most `configured` at once, and no more than the open-file limit leaves room for,
    /// after raising the soft limit to the hard one.
    pub fn new(configured: usize) -> Self {
        let allowed = raise_open_file_limit()
            .saturating_sub(SPARE_DESCRIPTORS)
            .div_euclid(DESCRIPTORS_PER_WAITING_CLAIM);
        let bound = configured.min(usize::try_from(allowed).unwrap_or(usize::MAX));
        if bound < configured {
            // Worth knowing, not a fault: only farms with that many workers reach the bound.
            tracing::info!(
                configured,
                bound,
                "the open-file limit allows fewer waiting claimWork calls than configured"
            );
        }
        WaitingClaims {
            waiting: Default::default(),
            bound,
        }
    }

    /// Counts one more waiting claim, or `None` when the bound is reached.
    pub fn enter(&self) -> Option<WaitingClaim> {
        use std::sync::atomic::Ordering;
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                (waiting < self.bound).then_some(waiting + 1)
            })
            .ok()
            .map(|_| WaitingClaim(self.waiting.clone()))
    }

    pub fn bound(&self) -> usize {
        self.bound
    }
}

/// Raises this process's soft limit of open files to its hard limit (a server holds a socket,
/// and for a waiting claim more, per client); returns the soft limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return u64::MAX;
    };
    if limit.maximum == Some(current) {
        return current;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = current, to = ?limit.maximum, "raised the open-file limit");
            limit.maximum.unwrap_or(u64::MAX)
        }
        Err(error) => {
            tracing::warn!(%error, limit = current, "cannot raise the open-file limit");
            current
        }
    }
}
