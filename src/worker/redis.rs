//! The REDIS engine (`--engine redis`, Cloudomation's REDIS task): one command to a Redis
//! server, `schemas/redis-payload.json`, its reply as the task's `result`. One command needs
//! only RESP2's request and five reply types, so the engine speaks it itself over a
//! `TcpStream` ([`encode`], [`parse`]) rather than through a client library's connection
//! managers and command builders.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::calls::{self, Ended};
use super::payload::RedisPayload;
use super::resolution::Outcome;
use super::task_run::RunContext;

/// The largest reply a REDIS task reads (it becomes the task's outputs).
const MAX_REPLY_BYTES: usize = 16 << 20;
/// How deep arrays in a reply may nest (a reply is the server's, but no input may overflow
/// the stack).
const MAX_DEPTH: usize = 32;

pub async fn execute(run: &mut RunContext) -> Outcome {
    let payload = match RedisPayload::read(&run.definition["payload"]) {
        Ok(payload) => payload,
        Err(invalid) => return run.malformed_payload(&invalid),
    };
    let words = payload.words();
    run.log.info(&format!(
        "Command: {} ({} arguments) on {}:{}",
        words[..payload.command.split_whitespace().count()].join(" "),
        payload.args.len(),
        payload.host,
        payload.port
    ));
    calls::run(run, payload.max_run_time, call(&payload, &words)).await
}

async fn call(payload: &RedisPayload, words: &[String]) -> Ended {
    let failed = |reason: String| Ended::Failed {
        reason,
        outputs: None,
    };
    let address = format!("{}:{}", payload.host, payload.port);
    let mut stream = match TcpStream::connect((payload.host.as_str(), payload.port)).await {
        Ok(stream) => stream,
        Err(error) => return failed(format!("connecting to {address}: {error}")),
    };
    if let Err(error) = stream.write_all(&encode(words)).await {
        return failed(format!("sending the command to {address}: {error}"));
    }
    let mut buffer = Vec::new();
    let reply = loop {
        match parse(&buffer, 0) {
            Ok(Some((reply, _))) => break reply,
            Ok(None) if buffer.len() < MAX_REPLY_BYTES => {}
            Ok(None) => return failed(format!("the reply is over {MAX_REPLY_BYTES} bytes")),
            Err(error) => return failed(format!("{address} answered outside RESP: {error}")),
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) => return failed(format!("{address} closed the connection before replying")),
            Ok(_) => {}
            Err(error) => return failed(format!("reading the reply from {address}: {error}")),
        }
    };
    match reply {
        Reply::Error(message) => Ended::Failed {
            reason: format!("Redis answered an error: {message}"),
            outputs: Some(json!({"error": message})),
        },
        reply => Ended::Done(json!({"result": reply.into_json()})),
    }
}

/// A command as RESP's array of bulk strings.
fn encode(words: &[String]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        request.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        request.extend_from_slice(word.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// A RESP2 reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// A bulk string; `None` is nil.
    Bulk(Option<Vec<u8>>),
    /// `None` is a nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn into_json(self) -> Value {
        match self {
            Reply::Simple(text) => Value::String(text),
            // Only inside an array (EXEC's replies): the top-level one fails the task.
            Reply::Error(message) => json!({"error": message}),
            Reply::Integer(number) => json!(number),
            Reply::Bulk(Some(bytes)) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            Reply::Bulk(None) | Reply::Array(None) => Value::Null,
            Reply::Array(Some(items)) => items.into_iter().map(Reply::into_json).collect(),
        }
    }
}

/// The reply at the start of `input` and the bytes it took, or `None` while it is incomplete.
fn parse(input: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
    }
    let Some(end) = input.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = input[..end].split_first() else {
        return Err("an empty line".to_owned());
    };
    let line = String::from_utf8_lossy(line).into_owned();
    let after_line = end + 2;
    let length = || -> Result<i64, String> {
        line.parse()
            .map_err(|_| format!("`{line}` is not a length"))
    };
    let reply = match kind {
        b'+' => (Reply::Simple(line), after_line),
        b'-' => (Reply::Error(line), after_line),
        b':' => (
            Reply::Integer(
                line.parse()
                    .map_err(|_| format!("`{line}` is not an integer"))?,
            ),
            after_line,
        ),
        b'$' => match usize::try_from(length()?) {
            // -1 is nil.
            Err(_) => (Reply::Bulk(None), after_line),
            Ok(length) => {
                let Some(end) = after_line
                    .checked_add(length)
                    .filter(|end| *end <= MAX_REPLY_BYTES)
                else {
                    return Err(format!("a bulk string of {length} bytes"));
                };
                if input.len() < end + 2 {
                    return Ok(None);
                }
                if &input[end..end + 2] != b"\r\n" {
                    return Err("a bulk string longer than its length".to_owned());
                }
                (Reply::Bulk(Some(input[after_line..end].to_vec())), end + 2)
            }
        },
        b'*' => match usize::try_from(length()?) {
            Err(_) => (Reply::Array(None), after_line),
            Ok(count) => {
                let mut items = Vec::new();
                let mut at = after_line;
                for _ in 0..count {
                    match parse(&input[at..], depth + 1)? {
                        Some((item, used)) => {
                            items.push(item);
                            at += used;
                        }
                        None => return Ok(None),
                    }
                }
                (Reply::Array(Some(items)), at)
            }
        },
        other => return Err(format!("an unknown reply type `{}`", char::from(other))),
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(input: &[u8]) -> Reply {
        let (reply, used) = parse(input, 0).unwrap().unwrap();
        assert_eq!(used, input.len());
        reply
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let words = ["SET".to_owned(), "k".to_owned(), "héllo".to_owned()];
        assert_eq!(
            encode(&words),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nh\xc3\xa9llo\r\n".to_vec()
        );
    }

    #[test]
    fn replies_become_json() {
        assert_eq!(whole(b"+OK\r\n").into_json(), json!("OK"));
        assert_eq!(whole(b":-42\r\n").into_json(), json!(-42));
        assert_eq!(whole(b"$5\r\nab\r\nc\r\n").into_json(), json!("ab\r\nc"));
        assert_eq!(whole(b"$-1\r\n").into_json(), Value::Null);
        assert_eq!(whole(b"*-1\r\n").into_json(), Value::Null);
        assert_eq!(
            whole(b"*3\r\n$1\r\na\r\n:1\r\n*1\r\n-ERR no\r\n").into_json(),
            json!(["a", 1, [{"error": "ERR no"}]])
        );
        assert_eq!(
            whole(b"-WRONGTYPE x\r\n"),
            Reply::Error("WRONGTYPE x".into())
        );
    }

    #[test]
    fn a_partial_reply_waits_for_more() {
        for partial in [&b"+OK"[..], b"$5\r\nab", b"*2\r\n:1\r\n", b""] {
            assert_eq!(parse(partial, 0), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        for bad in [
            &b"?\r\n"[..],
            b"\r\n",
            b":x\r\n",
            b"$abc\r\n",
            b"$1\r\nabc\r\n",
            b"$99999999999999999999\r\n",
            b"$18446744073709551615\r\n",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad:?}");
        }
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep, 0).is_err());
    }
}
