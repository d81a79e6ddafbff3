//! The client table: who may sign requests, with which access token and scopes. Clients and
//! roles come from configuration (static: the API cannot change them) and from the Auth API
//! (documents of the log, `model::document`); a table is an immutable snapshot, and a change
//! makes a new one ([`Clients::with_api_client`], [`Clients::with_api_role`]). Client scopes
//! are expanded through the roles once, when a table is made, rather than on every request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use super::credentials::temporary_access_token;
use super::ext::ASSUME_ANONYMOUS;
use super::roles::{self, Role, Roles};
use super::scopes::{ScopeSet, is_grantable_scope};
use crate::model::Timestamp;
use crate::model::document::{ClientRecord, RoleRecord};

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
    /// The scopes as given, before expansion.
    pub(crate) given_scopes: Vec<String>,
    /// What the Auth API made it with; `None` for a static client.
    pub(crate) record: Option<Arc<ClientRecord>>,
}

/// A client as the Auth API shows it.
#[derive(Clone, Debug)]
pub struct ClientView {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expanded_scopes: ScopeSet,
    pub expires: Option<Timestamp>,
    pub disabled: bool,
    /// `None` for a static client.
    pub record: Option<Arc<ClientRecord>>,
}

/// A role as the Auth API shows it.
#[derive(Clone, Debug)]
pub struct RoleView {
    pub role_id: String,
    pub scopes: Vec<String>,
    /// `None` for a configured role.
    pub record: Option<Arc<RoleRecord>>,
}

/// The static clients and the roles. Unauthenticated requests get the scopes of the role
/// `anonymous`; so does every authenticated one, in addition to its own.
#[derive(Clone, Debug)]
pub struct Clients {
    clients: HashMap<String, Arc<LoadedClient>>,
    roles: Roles,
    anonymous_scopes: ScopeSet,
    /// The configured roles, then those the Auth API made.
    static_roles: Vec<Role>,
    api_roles: BTreeMap<String, Arc<RoleRecord>>,
    /// When the configuration's clients and roles were loaded (the server's start): what the
    /// Auth API shows as their creation.
    configured_at: Timestamp,
}

/// Taskcluster's clientId pattern.
pub fn is_valid_client_id(client_id: &str) -> bool {
    !client_id.is_empty()
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!@/:.+|_-".contains(&b))
}

impl LoadedClient {
    fn new(
        roles: &Roles,
        access_token: String,
        given_scopes: Vec<String>,
        expires: Option<Timestamp>,
        disabled: bool,
        record: Option<Arc<ClientRecord>>,
    ) -> LoadedClient {
        let scopes = roles.expand(&ScopeSet::new(given_scopes.iter().cloned()));
        let effective_scopes = roles.expand(&scopes.union(&ScopeSet::new([ASSUME_ANONYMOUS])));
        LoadedClient {
            access_token,
            scopes,
            effective_scopes,
            expires,
            disabled,
            given_scopes,
            record,
        }
    }

    fn api(roles: &Roles, record: Arc<ClientRecord>, token_key: &str) -> LoadedClient {
        LoadedClient::new(
            roles,
            derive_access_token(token_key, &record.token_seed),
            record.scopes.clone(),
            Some(record.expires),
            record.disabled,
            Some(record),
        )
    }
}

/// The access token of an API-made client: an HMAC of its seed under the deployment's token
/// key, so that what the log keeps of the client cannot sign anything by itself.
pub fn derive_access_token(token_key: &str, seed: &str) -> String {
    temporary_access_token(token_key, seed)
}

impl Clients {
    /// The static table: configured clients and roles (`roles` is checked by [`Roles::new`]).
    pub fn new(
        clients: impl IntoIterator<Item = Client>,
        roles: Vec<Role>,
    ) -> Result<Clients, Error> {
        let static_roles = roles.clone();
        let roles = Roles::new(roles)?;
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
            let entry = LoadedClient::new(
                &roles,
                client.access_token,
                client.scopes,
                client.expires,
                client.disabled,
                None,
            );
            if loaded
                .insert(client.client_id.clone(), Arc::new(entry))
                .is_some()
            {
                return Err(Error::DuplicateClient(client.client_id));
            }
        }
        Ok(Clients {
            clients: loaded,
            roles,
            anonymous_scopes,
            static_roles,
            api_roles: BTreeMap::new(),
            configured_at: Timestamp::now(),
        })
    }

    /// This table with the API-made client `client_id` as `record` says (`None`: deleted),
    /// its access token derived from the record's seed with `token_key`. A static client of
    /// that id is never replaced.
    pub fn with_api_client(
        &self,
        client_id: &str,
        record: Option<Arc<ClientRecord>>,
        token_key: &str,
    ) -> Clients {
        let mut table = self.clone();
        if self.is_static_client(client_id) {
            return table;
        }
        match record {
            Some(record) => {
                let entry = LoadedClient::api(&self.roles, record, token_key);
                table.clients.insert(client_id.to_owned(), Arc::new(entry));
            }
            None => {
                table.clients.remove(client_id);
            }
        }
        table
    }

    /// This table with the API-made role `role_id` as `record` says (`None`: deleted), every
    /// client's scopes expanded again; refused as [`Roles::new`] refuses (a cycle, a bad
    /// scope), or when `role_id` is a configured role.
    pub fn with_api_role(
        &self,
        role_id: &str,
        record: Option<Arc<RoleRecord>>,
    ) -> Result<Clients, Error> {
        let mut api_roles = self.api_roles.clone();
        match record {
            Some(record) => api_roles.insert(role_id.to_owned(), record),
            None => api_roles.remove(role_id),
        };
        self.with_api_roles(api_roles)
    }

    /// This table with every API-made client and role replaced by these (a start's load).
    pub fn with_api_documents(
        &self,
        clients: Vec<(String, Arc<ClientRecord>)>,
        roles: Vec<(String, Arc<RoleRecord>)>,
        token_key: &str,
    ) -> Result<Clients, Error> {
        let mut table = self.with_api_roles(roles.into_iter().collect())?;
        for (client_id, record) in clients {
            if !table.is_static_client(&client_id) {
                let entry = LoadedClient::api(&table.roles, record, token_key);
                table.clients.insert(client_id, Arc::new(entry));
            }
        }
        Ok(table)
    }

    fn with_api_roles(
        &self,
        api_roles: BTreeMap<String, Arc<RoleRecord>>,
    ) -> Result<Clients, Error> {
        if let Some(role_id) = api_roles.keys().find(|id| self.is_static_role(id)) {
            return Err(Error::Roles(roles::Error::DuplicateRole(role_id.clone())));
        }
        let all = self
            .static_roles
            .iter()
            .cloned()
            .chain(api_roles.iter().map(|(id, record)| Role {
                role_id: id.clone(),
                scopes: record.scopes.clone(),
            }));
        let roles = Roles::new(all)?;
        let clients = self
            .clients
            .iter()
            .map(|(client_id, client)| {
                let entry = LoadedClient::new(
                    &roles,
                    client.access_token.clone(),
                    client.given_scopes.clone(),
                    client.expires,
                    client.disabled,
                    client.record.clone(),
                );
                (client_id.clone(), Arc::new(entry))
            })
            .collect();
        Ok(Clients {
            clients,
            anonymous_scopes: roles.expand(&ScopeSet::new([ASSUME_ANONYMOUS])),
            roles,
            static_roles: self.static_roles.clone(),
            api_roles,
            configured_at: self.configured_at,
        })
    }

    /// When the configuration's clients and roles were loaded.
    pub fn configured_at(&self) -> Timestamp {
        self.configured_at
    }

    /// Whether `client_id` is a client of the configuration (the API cannot change it).
    pub fn is_static_client(&self, client_id: &str) -> bool {
        self.clients
            .get(client_id)
            .is_some_and(|client| client.record.is_none())
    }

    /// Whether `role_id` is a role of the configuration (the API cannot change it).
    pub fn is_static_role(&self, role_id: &str) -> bool {
        self.static_roles.iter().any(|role| role.role_id == role_id)
    }

    /// The client `client_id` as the Auth API shows it.
    pub fn client(&self, client_id: &str) -> Option<ClientView> {
        let client = self.clients.get(client_id)?;
        Some(ClientView {
            client_id: client_id.to_owned(),
            scopes: client.given_scopes.clone(),
            expanded_scopes: client.scopes.clone(),
            expires: client.expires,
            disabled: client.disabled,
            record: client.record.clone(),
        })
    }

    /// Every client id starting with `prefix`, in order.
    pub fn client_ids(&self, prefix: &str) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .clients
            .keys()
            .map(String::as_str)
            .filter(|id| id.starts_with(prefix))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every role, configured and API-made, in id order.
    pub fn role_views(&self) -> Vec<RoleView> {
        let mut views: Vec<RoleView> = self
            .static_roles
            .iter()
            .map(|role| RoleView {
                role_id: role.role_id.clone(),
                scopes: role.scopes.clone(),
                record: None,
            })
            .chain(self.api_roles.iter().map(|(role_id, record)| RoleView {
                role_id: role_id.clone(),
                scopes: record.scopes.clone(),
                record: Some(record.clone()),
            }))
            .collect();
        views.sort_by(|a, b| a.role_id.cmp(&b.role_id));
        views
    }

    pub fn role_view(&self, role_id: &str) -> Option<RoleView> {
        if let Some(role) = self
            .static_roles
            .iter()
            .find(|role| role.role_id == role_id)
        {
            return Some(RoleView {
                role_id: role.role_id.clone(),
                scopes: role.scopes.clone(),
                record: None,
            });
        }
        let record = self.api_roles.get(role_id)?;
        Some(RoleView {
            role_id: role_id.to_owned(),
            scopes: record.scopes.clone(),
            record: Some(record.clone()),
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
    /// (A client whose access token is derived, made through the API, is checked alike.)
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
        let roles = vec![
            Role {
                role_id: "anonymous".into(),
                scopes: vec!["queue:ping".into()],
            },
            Role {
                role_id: "worker:*".into(),
                scopes: vec!["queue:worker-id:<..>".into()],
            },
        ];
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
        let roles: Vec<Role> = Vec::new();
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
