//! The SMTP engine (`--engine smtp`, Cloudomation's SMTP task): one plain-text message per
//! task, `schemas/smtp-payload.json`, sent with lettre (tokio, rustls). With `use_tls` (the
//! default) STARTTLS is required before anything is sent, the server's certificate checked
//! against the system's roots; the login and password may be read from secrets and are never
//! written to the log or the outputs.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::json;

use super::calls::{self, Ended};
use super::payload::{Invalid, SmtpPayload};
use super::resolution::{Outcome, Problem};
use super::secrets::Secrets;
use super::task_run::RunContext;

pub async fn execute(run: &mut RunContext) -> Outcome {
    let payload = match SmtpPayload::read(&run.definition["payload"]) {
        Ok(payload) => payload,
        Err(invalid) => return run.malformed_payload(&invalid),
    };
    let message = match message(&payload) {
        Ok(message) => message,
        Err(problems) => return run.malformed_payload(&Invalid(problems)),
    };
    let credentials = match (&payload.login, &payload.password) {
        (Some(login), Some(password)) => {
            let mut secrets = Secrets::default();
            let read = async {
                Ok::<_, Problem>(Credentials::new(
                    secrets.string(run, login).await?,
                    secrets.string(run, password).await?,
                ))
            };
            match read.await {
                Ok(credentials) => Some(credentials),
                Err(problem) => return calls::not_started(run, problem),
            }
        }
        // The schema wants both or neither.
        _ => None,
    };
    let transport = match transport(&payload, credentials) {
        Ok(transport) => transport,
        Err(problem) => return calls::not_started(run, problem),
    };
    run.log.info(&format!(
        "Sending: to {} through {}:{} ({})",
        payload.to.list().join(", "),
        payload.smtp_host,
        payload.port(),
        if payload.use_tls {
            "STARTTLS"
        } else {
            "without TLS"
        }
    ));
    let sending = async {
        match transport.send(message).await {
            Ok(response) => Ended::Done(json!({
                "code": u16::from(response.code()),
                "message": response.message().collect::<Vec<_>>().join("\n"),
            })),
            Err(error) => Ended::Failed {
                reason: format!("sending the message: {error}"),
                outputs: None,
            },
        }
    };
    calls::run(run, payload.max_run_time, sending).await
}

/// The message, or what is wrong with its addresses.
fn message(payload: &SmtpPayload) -> Result<Message, Vec<String>> {
    let mut problems = Vec::new();
    let mut mailbox = |place: String, text: &str| match text.parse::<Mailbox>() {
        Ok(mailbox) => Some(mailbox),
        Err(error) => {
            problems.push(format!(
                "payload/{place}: `{text}` is not an address: {error}"
            ));
            None
        }
    };
    let from = mailbox("from".to_owned(), &payload.from);
    let to: Vec<Option<Mailbox>> = match &payload.to {
        super::payload::Recipients::One(to) => vec![mailbox("to".to_owned(), to)],
        super::payload::Recipients::Several(list) => list
            .iter()
            .enumerate()
            .map(|(index, to)| mailbox(format!("to/{index}"), to))
            .collect(),
    };
    let (Some(from), Some(to)) = (from, to.into_iter().collect::<Option<Vec<_>>>()) else {
        return Err(problems);
    };
    let mut builder = Message::builder()
        .from(from)
        .subject(payload.subject.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in to {
        builder = builder.to(to);
    }
    builder
        .body(payload.body.clone())
        .map_err(|error| vec![format!("payload: the message cannot be built: {error}")])
}

fn transport(
    payload: &SmtpPayload,
    credentials: Option<Credentials>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, Problem> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&payload.smtp_host)
        .port(payload.port())
        .timeout(Some(Duration::from_secs(payload.max_run_time)));
    if payload.use_tls {
        let parameters = TlsParameters::new(payload.smtp_host.clone())
            .map_err(|error| Problem::Internal(format!("TLS for SMTP: {error}")))?;
        builder = builder.tls(Tls::Required(parameters));
    }
    if let Some(credentials) = credentials {
        builder = builder.credentials(credentials);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_are_checked_before_sending() {
        let payload = SmtpPayload::read(&json!({
            "from": "not an address", "to": ["ok@example.com", "@nope"],
            "subject": "s", "smtp_host": "localhost"
        }))
        .unwrap();
        let problems = message(&payload).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("payload/from:"));
        assert!(problems[1].starts_with("payload/to/1:"));
        let good = SmtpPayload::read(&json!({
            "from": "Robot <robot@example.com>", "to": "ops@example.com",
            "subject": "s", "body": "b", "smtp_host": "localhost"
        }))
        .unwrap();
        assert!(message(&good).is_ok());
        assert_eq!(good.port(), 587);
    }

    #[test]
    fn login_and_password_go_together() {
        let payload = json!({
            "from": "a@example.com", "to": "b@example.com", "subject": "s",
            "smtp_host": "h", "login": "me"
        });
        assert!(SmtpPayload::read(&payload).is_err());
    }
}
