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
use miniz_oxide::deflate::core::{
    CompressionStrategy, CompressorOxide, TDEFLFlush, TDEFLStatus, compress_to_output,
};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

use crate::model::{ApiError, ErrorCode};

/// Answers a websocket upgrade: the response to return, and the two halves of the connection.
/// `max_frame` bounds a frame from the peer; `buffer` is how many sends may wait to be written
/// before a send waits.
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
    let (output, chunks) = mpsc::channel::<Vec<Bytes>>(buffer.max(1));
    let stream = futures::stream::unfold(
        (chunks, Vec::new().into_iter()),
        |(mut chunks, mut queued)| async move {
            loop {
                if let Some(chunk) = queued.next() {
                    return Some((Ok::<_, actix_web::Error>(chunk), (chunks, queued)));
                }
                queued = chunks.recv().await?.into_iter();
            }
        },
    );
    let response = response
        .message_body(BodyStream::new(stream).boxed())
        .map_err(|error| ApiError::new(ErrorCode::InternalServerError, error.to_string()))?;
    let reader = Reader {
        incoming: body,
        received: BytesMut::new(),
        codec: ws::Codec::new().max_size(max_frame),
        heard: Rc::new(Cell::new(Instant::now())),
        max_frame,
        inflater: None,
        compressed: false,
    };
    Ok((HttpResponse::from(response), reader, Writer { output }))
}

/// Frames from the peer.
pub struct Reader {
    incoming: Payload,
    received: BytesMut,
    codec: ws::Codec,
    heard: Rc<Cell<Instant>>,
    max_frame: usize,
    /// With permessage-deflate negotiated: the peer's compression context.
    inflater: Option<flate2::Decompress>,
    /// Whether the frame being decoded had RSV1 set (it is compressed).
    compressed: bool,
}

/// What the peer sent (pongs and continuations only count as signs of life).
pub enum Incoming {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Close(Option<CloseReason>),
    /// The peer broke the protocol (a frame larger than allowed, bad framing, compressed data
    /// that does not inflate): the reason to close with, through [`refuse`].
    Violation(Option<CloseReason>),
    /// The connection broke.
    Gone,
}

impl Reader {
    /// The next frame the peer sent. Cancel-safe: a frame is decoded only from what has been
    /// read.
    pub async fn receive(&mut self) -> Incoming {
        loop {
            // The codec knows no extension: a compressed frame's RSV1 is noted and cleared
            // before it looks (once per frame, as the frame's first byte leads the buffer).
            if self.inflater.is_some()
                && let Some(first) = self.received.first_mut()
                && *first & RSV1 != 0
            {
                *first &= !RSV1;
                self.compressed = true;
            }
            match self.codec.decode(&mut self.received) {
                Ok(Some(frame)) => {
                    self.heard.set(Instant::now());
                    let compressed = std::mem::take(&mut self.compressed);
                    match frame {
                        ws::Frame::Text(text) if compressed => match self.inflate(&text) {
                            Some(text) => return Incoming::Text(text),
                            None => return self.not_inflated(),
                        },
                        ws::Frame::Binary(bytes) if compressed => match self.inflate(&bytes) {
                            Some(bytes) => return Incoming::Binary(bytes),
                            None => return self.not_inflated(),
                        },
                        ws::Frame::Text(text) => return Incoming::Text(text),
                        ws::Frame::Binary(bytes) => return Incoming::Binary(bytes),
                        ws::Frame::Ping(bytes) => return Incoming::Ping(bytes),
                        ws::Frame::Close(reason) => return Incoming::Close(reason),
                        ws::Frame::Pong(_) | ws::Frame::Continuation(_) => continue,
                    }
                }
                Ok(None) => {}
                Err(ws::ProtocolError::Overflow) => {
                    return Incoming::Violation(close_reason(
                        CloseCode::Size,
                        format!("a message larger than {} bytes", self.max_frame),
                    ));
                }
                Err(error) => {
                    return Incoming::Violation(close_reason(
                        CloseCode::Protocol,
                        error.to_string(),
                    ));
                }
            }
            match self.incoming.next().await {
                Some(Ok(bytes)) => self.received.extend_from_slice(&bytes),
                Some(Err(_)) | None => return Incoming::Gone,
            }
        }
    }

    fn not_inflated(&self) -> Incoming {
        Incoming::Violation(close_reason(
            CloseCode::Protocol,
            format!(
                "a compressed message that does not inflate to at most {} bytes",
                self.max_frame
            ),
        ))
    }

    /// When the peer last sent a frame; shared, so it can be read while `receive` runs.
    pub fn heard(&self) -> Rc<Cell<Instant>> {
        self.heard.clone()
    }

    /// permessage-deflate was negotiated: the peer's messages may be compressed.
    pub fn accept_compressed(&mut self) {
        self.inflater = Some(flate2::Decompress::new(false));
    }

    /// A compressed message's payload, inflated (RFC 7692 §7.2.2); `None` if it is not valid
    /// deflate data or inflates past the largest frame.
    fn inflate(&mut self, payload: &[u8]) -> Option<Bytes> {
        let inflater = self.inflater.as_mut()?;
        let mut input = Vec::with_capacity(payload.len() + DEFLATE_TAIL.len());
        input.extend_from_slice(payload);
        input.extend_from_slice(&DEFLATE_TAIL);
        let mut output = Vec::with_capacity(payload.len() * 4);
        let start = inflater.total_in();
        loop {
            let consumed = (inflater.total_in() - start) as usize;
            if output.len() == output.capacity() {
                output.reserve(output.len().max(1024));
            }
            inflater
                .decompress_vec(
                    &input[consumed..],
                    &mut output,
                    flate2::FlushDecompress::Sync,
                )
                .ok()?;
            if output.len() > self.max_frame {
                return None;
            }
            let consumed = (inflater.total_in() - start) as usize;
            if consumed == input.len() && output.len() < output.capacity() {
                return Some(Bytes::from(output));
            }
        }
    }
}

/// The RSV1 bit of a frame's first byte: the frame is compressed (RFC 7692).
const RSV1: u8 = 0x40;
/// What a compressed message's deflate data ends with on the wire, minus this (§7.2.1).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How this server compresses its messages to a client that negotiated permessage-deflate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Deflate {
    /// In a context kept across messages (RFC 7692's context takeover), which lets a message
    /// lean on those before it.
    InContext,
    /// Each message on its own: the client asked for `server_no_context_takeover`.
    EachOnItsOwn,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` answer.
    pub fn answer(self) -> &'static str {
        match self {
            Deflate::InContext => "permessage-deflate",
            Deflate::EachOnItsOwn => "permessage-deflate; server_no_context_takeover",
        }
    }
}

/// How to compress for the client, if it offers permessage-deflate in a form this server can
/// honour; the client's messages are inflated in the context it keeps.
pub fn negotiate_deflate(request: &HttpRequest) -> Option<Deflate> {
    let offers = request
        .headers()
        .get_all(actix_web::http::header::SEC_WEBSOCKET_EXTENSIONS)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    offers
        .filter_map(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            (parts.next()? == "permessage-deflate").then_some(parts)
        })
        .find_map(|parameters| {
            let mut deflate = Deflate::InContext;
            for parameter in parameters {
                let (name, value) = parameter
                    .split_once('=')
                    .map_or((parameter, None), |(name, value)| {
                        (name.trim(), Some(value.trim().trim_matches('"')))
                    });
                let honoured = match name {
                    "server_no_context_takeover" => {
                        deflate = Deflate::EachOnItsOwn;
                        value.is_none()
                    }
                    "client_no_context_takeover" => value.is_none(),
                    // Any window the client compresses with can be inflated with the largest.
                    "client_max_window_bits" => value.is_none_or(|bits| {
                        bits.parse::<u8>()
                            .is_ok_and(|bits| (8..=15).contains(&bits))
                    }),
                    // This server always compresses with the largest window.
                    "server_max_window_bits" => value == Some("15"),
                    _ => false,
                };
                if !honoured {
                    return None;
                }
            }
            Some(deflate)
        })
}

/// `text` as a compressed server text frame (RSV1 set), compressed on its own as
/// `server_no_context_takeover` asks.
pub fn deflated_text_frame(text: &[u8]) -> Bytes {
    thread_local! {
        // A compressor's state is large; each thread keeps one and restarts it per message.
        static CONTEXT: std::cell::RefCell<DeflateContext> =
            std::cell::RefCell::new(DeflateContext::new());
    }
    CONTEXT.with_borrow_mut(|context| {
        context.restart();
        context.frame(text)
    })
}

/// A compression context kept across messages: each frame it makes may lean on the messages
/// it compressed since it last restarted, so a client inflates it only after all of those
/// (and no other compressed message since). Its blocks use deflate's fixed codes: a
/// listener's message leans mostly on the ones before it, and a block's own code tables
/// would cost more to build and to send than they save.
pub struct DeflateContext(Box<CompressorOxide>);

impl DeflateContext {
    pub fn new() -> DeflateContext {
        DeflateContext(Box::new(CompressorOxide::with_params(
            miniz_oxide::DataFormat::Raw,
            1,
            CompressionStrategy::Fixed,
            15,
        )))
    }

    /// Forgets every message before: the next frame stands on its own.
    pub fn restart(&mut self) {
        self.0.reset();
    }

    /// `text` as a compressed server text frame (RSV1 set).
    pub fn frame(&mut self, text: &[u8]) -> Bytes {
        let mut payload = Vec::with_capacity(text.len() / 2 + 64);
        let mut rest = text;
        loop {
            // Output goes to a vector, which always takes it: compressing cannot fail.
            let (status, consumed) =
                compress_to_output(&mut self.0, rest, TDEFLFlush::Sync, |output| {
                    payload.extend_from_slice(output);
                    true
                });
            rest = &rest[consumed..];
            if rest.is_empty() || status != TDEFLStatus::Okay {
                break;
            }
        }
        if payload.ends_with(&DEFLATE_TAIL) {
            payload.truncate(payload.len() - DEFLATE_TAIL.len());
        }
        let mut frame = BytesMut::with_capacity(payload.len() + 10);
        frame.extend_from_slice(&[0x80 | RSV1 | 0x1]);
        match payload.len() {
            length @ 0..=125 => frame.extend_from_slice(&[length as u8]),
            length @ 126..=0xffff => {
                frame.extend_from_slice(&[126]);
                frame.extend_from_slice(&(length as u16).to_be_bytes());
            }
            length => {
                frame.extend_from_slice(&[127]);
                frame.extend_from_slice(&(length as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&payload);
        frame.freeze()
    }
}

impl Default for DeflateContext {
    fn default() -> DeflateContext {
        DeflateContext::new()
    }
}

/// Frames to the peer.
#[derive(Clone)]
pub struct Writer {
    /// Chunks of encoded frames, handed on together.
    output: mpsc::Sender<Vec<Bytes>>,
}

impl Writer {
    /// Sends frames already encoded; an error once the connection is gone.
    pub async fn send_encoded(&self, frames: Bytes) -> Result<(), ()> {
        self.send_chunks(vec![frames]).await
    }

    /// Sends chunks of frames already encoded, written in order without being joined first;
    /// they count as one towards the connection's buffer.
    pub async fn send_chunks(&self, chunks: Vec<Bytes>) -> Result<(), ()> {
        self.output.send(chunks).await.map_err(drop)
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

/// How long [`refuse`] reads what a peer still sends before the connection is dropped.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends a connection whose peer broke the protocol: the close frame with `reason`, then what
/// the peer still sends (the rest of a message too large, its own close) is read and dropped
/// until it hangs up, for at most [`DRAIN_LIMIT`]. A socket closed with input unread is reset,
/// and the peer could lose the close frame with it.
pub async fn refuse(writer: Writer, mut reader: Reader, reason: Option<CloseReason>) {
    let _ = writer.send(ws::Message::Close(reason)).await;
    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(Ok(_)) = reader.incoming.next().await {}
    })
    .await;
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

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// A compressed text frame's payload, with what deflate ends it with on the wire put back.
    fn payload(frame: &[u8]) -> Vec<u8> {
        assert_eq!(
            frame[0],
            0x80 | RSV1 | 0x1,
            "a final, compressed text frame"
        );
        let (length, start) = match frame[1] {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            length => (length as usize, 2),
        };
        assert_eq!(frame.len(), start + length);
        [&frame[start..], &DEFLATE_TAIL[..]].concat()
    }

    /// The frame's payload, inflated on its own as a client would.
    fn inflate_frame(frame: &[u8]) -> Vec<u8> {
        let mut output = Vec::new();
        flate2::read::DeflateDecoder::new(&payload(frame)[..])
            .read_to_end(&mut output)
            .ok();
        output
    }

    fn inflate_in(inflater: &mut flate2::Decompress, frame: &[u8]) -> Vec<u8> {
        let mut output = Vec::with_capacity(1 << 20);
        inflater
            .decompress_vec(&payload(frame), &mut output, flate2::FlushDecompress::Sync)
            .unwrap();
        output
    }

    #[test]
    fn frames_in_one_context_inflate_in_order_and_a_restart_stands_alone() {
        let texts: Vec<Vec<u8>> = (0..20)
            .map(|index| {
                format!(r#"{{"type":"message","index":{index},"exchange":"task-defined"}}"#)
                    .into_bytes()
            })
            .collect();
        let mut context = DeflateContext::new();
        let frames: Vec<Bytes> = texts.iter().map(|text| context.frame(text)).collect();
        // Later frames lean on earlier ones: far smaller than the first.
        assert!(
            frames[5].len() * 2 < frames[0].len(),
            "{} vs {}",
            frames[5].len(),
            frames[0].len()
        );
        let mut inflater = flate2::Decompress::new(false);
        for (frame, text) in frames.iter().zip(&texts) {
            assert_eq!(&inflate_in(&mut inflater, frame), text);
        }
        // Alone, a frame that leans on others does not inflate to its text.
        let lone = inflate_frame(&frames[5]);
        assert_ne!(lone, texts[5]);
        context.restart();
        let restarted = context.frame(&texts[7]);
        assert_eq!(inflate_frame(&restarted), texts[7]);
        // A client that kept its context inflates the restarted frame too.
        assert_eq!(inflate_in(&mut inflater, &restarted), texts[7]);
    }

    #[test]
    fn a_deflated_frame_inflates_to_its_text_at_every_length_encoding() {
        let mut noise = 0x2545_f491_4f6c_dd1d_u64;
        let mut text = |length: usize| -> Vec<u8> {
            (0..length)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    b'a' + (noise % 26) as u8
                })
                .collect()
        };
        for length in [0, 10, 1_000, 200_000] {
            let text = text(length);
            // Twice: the second frame must not lean on the first.
            for _ in 0..2 {
                assert_eq!(inflate_frame(&deflated_text_frame(&text)), text);
            }
        }
    }
}
