//! Credentials a payload names rather than holds (`schemas/secret-string.json`): a field
//! `{secret, key}` is read from the Secrets service of the task's deployment, with the run's
//! own credentials, so a task reads only the secrets its scopes (`secrets:get:<name>`) allow,
//! as through taskcluster-proxy. Values read never reach the log: only a secret's name and
//! key are ever written there.

use std::collections::HashMap;

use awc::http::{Method, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::payload::SecretString;
use super::resolution::Problem;
use super::task_run::RunContext;

/// Reads a run's secret strings, each secret once.
#[derive(Default)]
pub struct Secrets {
    /// Secret name → its value, as the Secrets service answered it.
    read: HashMap<String, Value>,
}

impl Secrets {
    /// The string `field` stands for. A secret that does not exist, that the task may not
    /// read or that lacks the key is the payload's fault; a service that cannot answer is not.
    pub async fn string(
        &mut self,
        run: &RunContext,
        field: &SecretString,
    ) -> Result<String, Problem> {
        let (name, key) = match field {
            SecretString::Plain(text) => return Ok(text.clone()),
            SecretString::Secret { secret, key } => (secret, key),
        };
        if !self.read.contains_key(name) {
            let value = fetch(run, name).await?;
            self.read.insert(name.clone(), value);
        }
        match self.read.get(name).map(|value| &value[key.as_str()]) {
            Some(Value::String(text)) => Ok(text.clone()),
            Some(Value::Number(number)) => Ok(number.to_string()),
            _ => Err(Problem::MalformedPayload(format!(
                "secret `{name}` has no string under key `{key}`"
            ))),
        }
    }
}

/// `GET <rootUrl>/api/secrets/v1/secret/<name>`, signed with the run's current credentials;
/// the secret's value.
async fn fetch(run: &RunContext, name: &str) -> Result<Value, Problem> {
    let client = run.publisher.client.borrow().clone();
    let path = format!(
        "/api/secrets/v1/secret/{}",
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    );
    match client
        .send(Method::GET, &client.resource(&path), None)
        .await
    {
        Ok(answer) => Ok(answer["secret"].clone()),
        Err(error) => Err(match error.status() {
            Some(StatusCode::NOT_FOUND) => {
                Problem::MalformedPayload(format!("secret `{name}` does not exist"))
            }
            Some(StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) => {
                Problem::MalformedPayload(format!(
                    "the task may not read secret `{name}` (it needs the scope `secrets:get:{name}`)"
                ))
            }
            _ => Problem::ResourceUnavailable(format!("reading secret `{name}`: {error}")),
        }),
    }
}
