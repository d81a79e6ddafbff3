//! Websockets on the server, without a session object in between: the handshake answers the
//! upgrade, frames from the peer are decoded off the request body ([`Reader`]), and encoded
//! frames go to it through the response body ([`Writer`], cheap to clone). The listener API
//! and the interactive-session relay both stand on this.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use actix_http::body::{BodyStream, MessageBody};
use actix_http::ws::{self, CloseCode, CloseReason};
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

use super::{ApiError, ErrorCode};

/// Answers a websocket upgrade: the response to return, and the two halves of the connection.
/// `max_frame` bounds a frame from the peer; `buffer` is how many chunks of frames may wait to
/// be written before a send waits.
pub fn accept(
    request: &HttpRequest,
    body: Payload,
    max_frame: usize,
    buffer: usize,
) -> Result<(HttpResponse, Reader, Writer), ApiError> {
    let mut response = ws::handshake(request.head()).map_err(|error| {
        ApiError::new(
            ErrorCode::InputError,
            format!("not a websocket request: {error}"),
        )
    })?;
    let (output, chunks) = mpsc::channel::<Bytes>(buffer.max(1));
    let stream = futures::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((Ok::<_, actix_web::Error>(chunk), chunks))
    });
    let response = response
        .message_body(BodyStream::new(stream).boxed())
        .map_err(|error| ApiError::new(ErrorCode::InternalServerError, error.to_string()))?;
    let reader = Reader {
        incoming: body,
        received: BytesMut::new(),
        codec: ws::Codec::new().max_size(max_frame),
        heard: Rc::new(Cell::new(Instant::now())),
    };
    Ok((HttpResponse::from(response), reader, Writer { output }))
}

/// Frames from the peer.
pub struct Reader {
    incoming: Payload,
    received: BytesMut,
    codec: ws::Codec,
    heard: Rc<Cell<Instant>>,
}

/// What the peer sent (pongs and continuations only count as signs of life).
pub enum Incoming {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Close(Option<CloseReason>),
    /// The connection broke or the peer broke the protocol.
    Gone,
}

impl Reader {
    /// The next frame the peer sent. Cancel-safe: a frame is decoded only from what has been
    /// read.
    pub async fn receive(&mut self) -> Incoming {
        loop {
            match self.codec.decode(&mut self.received) {
                Ok(Some(frame)) => {
                    self.heard.set(Instant::now());
                    match frame {
                        ws::Frame::Text(text) => return Incoming::Text(text),
                        ws::Frame::Binary(bytes) => return Incoming::Binary(bytes),
                        ws::Frame::Ping(bytes) => return Incoming::Ping(bytes),
                        ws::Frame::Close(reason) => return Incoming::Close(reason),
                        ws::Frame::Pong(_) | ws::Frame::Continuation(_) => continue,
                    }
                }
                Ok(None) => {}
                Err(_) => return Incoming::Gone,
            }
            match self.incoming.next().await {
                Some(Ok(bytes)) => self.received.extend_from_slice(&bytes),
                Some(Err(_)) | None => return Incoming::Gone,
            }
        }
    }

    /// When the peer last sent a frame; shared, so it can be read while `receive` runs.
    pub fn heard(&self) -> Rc<Cell<Instant>> {
        self.heard.clone()
    }
}

/// Frames to the peer.
#[derive(Clone)]
pub struct Writer {
    output: mpsc::Sender<Bytes>,
}

impl Writer {
    /// Sends frames already encoded; an error once the connection is gone.
    pub async fn send_encoded(&self, frames: Bytes) -> Result<(), ()> {
        self.output.send(frames).await.map_err(drop)
    }

    pub async fn send(&self, message: ws::Message) -> Result<(), ()> {
        self.send_encoded(encode(message)?).await
    }

    pub async fn send_text(&self, text: String) -> Result<(), ()> {
        self.send(ws::Message::Text(text.into())).await
    }

    pub async fn send_binary(&self, bytes: Bytes) -> Result<(), ()> {
        self.send(ws::Message::Binary(bytes)).await
    }

    /// Sends a close frame; the connection ends once it is written.
    pub async fn close(self, reason: Option<CloseReason>) {
        let _ = self.send(ws::Message::Close(reason)).await;
    }
}

/// A frame as a server sends it.
fn encode(message: ws::Message) -> Result<Bytes, ()> {
    let mut frame = BytesMut::new();
    ws::Codec::new().encode(message, &mut frame).map_err(drop)?;
    Ok(frame.freeze())
}

/// A close reason, its description cut to what fits in a control frame.
pub fn close_reason(code: CloseCode, description: impl Into<String>) -> Option<CloseReason> {
    let mut description: String = description.into();
    // A close frame's reason must fit in a control frame (125 bytes, 2 of them the code).
    while description.len() > 123 {
        description.pop();
    }
    Some(CloseReason {
        code,
        description: Some(description),
    })
}
