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
