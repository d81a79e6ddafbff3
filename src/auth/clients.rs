//! The client table: who may sign requests, with which access token and scopes. Taskcluster
//! keeps clients and roles in its auth service; a stand-alone queue needs its own static table,
//! built from configuration by the caller. Client scopes are expanded through the roles once,
//! here, rather than on every request.

use std::collections::HashMap;

use serde::Deserialize;

use super::ext::ASSUME_ANONYMOUS;
use super::roles::{self, Roles};
use super::scopes::{ScopeSet, is_grantable_scope};
use crate::model::Timestamp;

/// One client as configured (`[[auth.clients]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub client_id: String,
    pub access_token: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// After this instant the client can no longer authenticate.
    #[serde(default)]
    pub expires: Option<Timestamp>,
    #[serde(default)]
    pub disabled: bool,
}

/// Why a client table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("clientId `{0}` is not valid: it must match ^[A-Za-z0-9!@/:.+|_-]+$")]
    InvalidClientId(String),
    #[error("client `{0}` is defined twice")]
    DuplicateClient(String),
    #[error("client `{0}` has no access token")]
    MissingAccessToken(String),
    #[error(
        "client `{client_id}` has an invalid scope `{scope}` (printable ASCII, not ending in `**`)"
    )]
    InvalidScope { client_id: String, scope: String },
    #[error(transparent)]
    Roles(#[from] roles::Error),
}

/// A client, ready for authentication.
#[derive(Clone, Debug)]
pub(crate) struct LoadedClient {
    pub(crate) access_token: String,
    /// The client's scopes, expanded through the roles.
    pub(crate) scopes: ScopeSet,
    /// `scopes` with the anonymous role, expanded: what a request with these credentials and
    /// no `ext` restrictions gets.
    pub(crate) effective_scopes: ScopeSet,
    pub(crate) expires: Option<Timestamp>,
    pub(crate) disabled: bool,
}

/// The static clients and the roles. Unauthenticated requests get the scopes of the role
/// `anonymous`; so does every authenticated one, in addition to its own.
#[derive(Clone, Debug)]
pub struct Clients {
    clients: HashMap<String, LoadedClient>,
    roles: Roles,
    anonymous_scopes: ScopeSet,
}

/// Taskcluster's clientId pattern.
pub fn is_valid_client_id(client_id: &str) -> bool {
    !client_id.is_empty()
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!@/:.+|_-".contains(&b))
}

impl Clients {
    pub fn new(clients: impl IntoIterator<Item = Client>, roles: Roles) -> Result<Clients, Error> {
        let anonymous_scopes = roles.expand(&ScopeSet::new([ASSUME_ANONYMOUS]));
        let mut loaded = HashMap::new();
        for client in clients {
            if !is_valid_client_id(&client.client_id) {
                return Err(Error::InvalidClientId(client.client_id));
            }
            if client.access_token.is_empty() {
                return Err(Error::MissingAccessToken(client.client_id));
            }
            if let Some(scope) = client.scopes.iter().find(|s| !is_grantable_scope(s)) {
                return Err(Error::InvalidScope {
                    client_id: client.client_id.clone(),
                    scope: scope.clone(),
                });
            }
            let scopes = roles.expand(&ScopeSet::new(client.scopes));
            let effective_scopes = roles.expand(&scopes.union(&ScopeSet::new([ASSUME_ANONYMOUS])));
            let entry = LoadedClient {
                access_token: client.access_token,
                scopes,
                effective_scopes,
                expires: client.expires,
                disabled: client.disabled,
            };
            if loaded.insert(client.client_id.clone(), entry).is_some() {
                return Err(Error::DuplicateClient(client.client_id));
            }
        }
        Ok(Clients {
            clients: loaded,
            roles,
            anonymous_scopes,
        })
    }

    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// What an unauthenticated request may do: the expansion of `assume:anonymous`.
    pub fn anonymous_scopes(&self) -> &ScopeSet {
        &self.anonymous_scopes
    }

    /// The expanded scopes of a client, if it exists (disabled or expired ones included).
    pub fn scopes_of(&self, client_id: &str) -> Option<&ScopeSet> {
        self.clients.get(client_id).map(|client| &client.scopes)
    }

    /// The client that may sign as `client_id` at `now`: it exists, is enabled, not expired.
    pub(crate) fn load(
        &self,
        client_id: &str,
        now: Timestamp,
    ) -> Result<&LoadedClient, super::Error> {
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| super::Error::UnknownClient(client_id.to_owned()))?;
        if client.disabled {
            return Err(super::Error::DisabledClient(client_id.to_owned()));
        }
        if client.expires.is_some_and(|expires| expires < now) {
            return Err(super::Error::ExpiredClient(client_id.to_owned()));
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::roles::Role;

    fn client(client_id: &str, scopes: &[&str]) -> Client {
        Client {
            client_id: client_id.to_owned(),
            access_token: "token".to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires: None,
            disabled: false,
        }
    }

    #[test]
    fn scopes_are_expanded_once() {
        let roles = Roles::new([
            Role {
                role_id: "anonymous".into(),
                scopes: vec!["queue:ping".into()],
            },
            Role {
                role_id: "worker:*".into(),
                scopes: vec!["queue:worker-id:<..>".into()],
            },
        ])
        .unwrap();
        let clients = Clients::new([client("w", &["assume:worker:pool/1"])], roles).unwrap();
        assert_eq!(
            clients.scopes_of("w").unwrap(),
            &ScopeSet::new(["assume:worker:pool/1", "queue:worker-id:pool/1"])
        );
        assert_eq!(
            clients.anonymous_scopes(),
            &ScopeSet::new(["assume:anonymous", "queue:ping"])
        );
        let loaded = clients.load("w", Timestamp::from_millis(0)).unwrap();
        assert!(loaded.effective_scopes.satisfies_scope("queue:ping"));
    }

    #[test]
    fn refuses_bad_tables_and_bad_clients() {
        let roles = Roles::default();
        for (bad, expected) in [
            (client("a b", &[]), "InvalidClientId"),
            (client("", &[]), "InvalidClientId"),
            (client("a", &["x**"]), "InvalidScope"),
            (client("a", &["tab\t"]), "InvalidScope"),
            (
                Client {
                    access_token: String::new(),
                    ..client("a", &[])
                },
                "MissingAccessToken",
            ),
        ] {
            let error = Clients::new([bad], roles.clone()).unwrap_err();
            assert!(format!("{error:?}").starts_with(expected), "{error:?}");
        }
        assert!(matches!(
            Clients::new([client("a", &[]), client("a", &[])], roles.clone()),
            Err(Error::DuplicateClient(_))
        ));

        let now = Timestamp::from_millis(1_000);
        let clients = Clients::new(
            [
                Client {
                    disabled: true,
                    ..client("off", &[])
                },
                Client {
                    expires: Some(Timestamp::from_millis(999)),
                    ..client("old", &[])
                },
                client("static/taskcluster/root", &["*"]),
            ],
            roles,
        )
        .unwrap();
        assert!(matches!(
            clients.load("off", now),
            Err(super::super::Error::DisabledClient(_))
        ));
        assert!(matches!(
            clients.load("old", now),
            Err(super::super::Error::ExpiredClient(_))
        ));
        assert!(matches!(
            clients.load("nobody", now),
            Err(super::super::Error::UnknownClient(_))
        ));
        assert!(clients.load("static/taskcluster/root", now).is_ok());
    }
}
