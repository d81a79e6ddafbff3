//! Who may call the API: the static client table and roles of `[auth]`, plus the two clients
//! every deployment has, as Taskcluster's static clients: `static/taskcluster/root` (when its
//! token is in the environment) and the queue's own `static/taskcluster/queue`, whose
//! credentials sign the task credentials of every claim and reclaim, so that requests made
//! with those verify against this same table; and the clients and roles made through the Auth
//! API, documents of the log loaded at start and changed by that API once its events are
//! durable. Every service authenticates against this one table.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::auth::credentials::random_seed;
use crate::auth::{Client, Clients, Credentials, clients, roles};
use crate::engine::Engine;
use crate::model::document;
use crate::model::{ApiError, Document, DocumentKind};
use crate::settings::AuthSettings;

pub const ROOT_CLIENT_ID: &str = "static/taskcluster/root";
pub const QUEUE_CLIENT_ID: &str = "static/taskcluster/queue";
/// The environment variable holding the root client's access token.
pub const ROOT_ACCESS_TOKEN_VARIABLE: &str = "TASKFOLD_ROOT_ACCESS_TOKEN";

/// The clients and roles requests are checked against, and the credentials the queue signs
/// with.
#[derive(Clone, Debug)]
pub struct Access {
    /// The table as it is now; a change swaps in a new one.
    clients: Arc<RwLock<Arc<Clients>>>,
    /// Held while a change is made, so that changes apply one at a time.
    changing: Arc<Mutex<()>>,
    /// `static/taskcluster/queue`: the issuer of task credentials.
    pub queue_credentials: Credentials,
    /// What API-made clients' access tokens are derived with (`[auth] token_key`).
    pub token_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("[auth] roles: {0}")]
    Roles(#[from] roles::Error),
    #[error("[auth] clients: {0}")]
    Clients(#[from] clients::Error),
}

impl Access {
    /// The configured clients and roles, the queue's client (with the configured access
    /// token, or a random one), and the root client when `root_access_token` is given.
    pub fn from_settings(
        settings: &AuthSettings,
        root_access_token: Option<&str>,
    ) -> Result<Access, Error> {
        let roles = settings.roles.clone();
        let queue_access_token = if settings.queue_access_token.is_empty() {
            random_seed()
        } else {
            settings.queue_access_token.clone()
        };
        let queue_credentials = Credentials {
            client_id: QUEUE_CLIENT_ID.to_owned(),
            access_token: queue_access_token,
            certificate: None,
        };
        let everything = |client_id: &str, access_token: &str| Client {
            client_id: client_id.to_owned(),
            access_token: access_token.to_owned(),
            scopes: vec!["*".to_owned()],
            expires: None,
            disabled: false,
        };
        let mut table: Vec<Client> = settings.clients.clone();
        table.push(everything(QUEUE_CLIENT_ID, &queue_credentials.access_token));
        if let Some(token) = root_access_token {
            table.push(everything(ROOT_CLIENT_ID, token));
        }
        Ok(Access {
            clients: Arc::new(RwLock::new(Arc::new(Clients::new(table, roles)?))),
            changing: Arc::new(Mutex::new(())),
            queue_credentials,
            token_key: settings.token_key.clone(),
        })
    }

    /// The table as it is now.
    pub fn clients(&self) -> Arc<Clients> {
        Arc::clone(
            &self
                .clients
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Replaces the table with what `change` makes of it, unless it refuses.
    pub fn change<E>(&self, change: impl FnOnce(&Clients) -> Result<Clients, E>) -> Result<(), E> {
        let _one_at_a_time = self
            .changing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = Arc::new(change(&self.clients())?);
        *self
            .clients
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = changed;
        Ok(())
    }

    /// Keeps the table up with the engine's clients and roles: this node's changes before
    /// their call answers, other nodes' as they tell. A role change the table refuses (it
    /// would make a cycle with a change racing it) is logged and left out.
    pub fn watch(&self, engine: &Engine) {
        let access = self.clone();
        engine.watch_documents(Arc::new(move |kind, name, document| {
            if !matches!(kind, DocumentKind::Client | DocumentKind::Role) {
                return;
            }
            let changed = access.change(|table| match (kind, document) {
                (DocumentKind::Client, document) => {
                    let record = match document {
                        Some(Document::Client(record)) => Some(Arc::new(record.clone())),
                        _ => None,
                    };
                    Ok(table.with_api_client(name, record, &access.token_key))
                }
                (DocumentKind::Role, document) => {
                    let record = match document {
                        Some(Document::Role(record)) => Some(Arc::new(record.clone())),
                        _ => None,
                    };
                    table.with_api_role(name, record)
                }
                _ => Ok(table.clone()),
            });
            if let Err(error) = changed {
                tracing::error!(%error, name, "a role change does not fit the table");
            }
        }));
    }

    /// Loads every API-made client and role from the log's documents (at start, once the
    /// engine has replayed).
    pub async fn load(&self, engine: &Engine) -> Result<(), LoadError> {
        // In a cluster, every partition's owner must be known to be asked.
        if !engine.wait_for_owners().await {
            tracing::warn!(
                "not every partition has an owner yet: the clients and roles of those that \
                 have none are known here once this node serves them or they change"
            );
        }
        let mut clients = Vec::new();
        let mut roles = Vec::new();
        for kind in [DocumentKind::Client, DocumentKind::Role] {
            let prefix = document::store_key(kind, "");
            let mut after = None;
            loop {
                let (page, more) = engine
                    .documents(prefix.clone(), after.take(), 1_000)
                    .await
                    .map_err(LoadError::Engine)?;
                if let Some((name, _)) = page.last() {
                    after = Some(document::store_key(kind, name));
                }
                for (name, found) in page {
                    match found {
                        Document::Client(record) => clients.push((name, Arc::new(record))),
                        Document::Role(record) => roles.push((name, Arc::new(record))),
                        _ => {}
                    }
                }
                if !more {
                    break;
                }
            }
        }
        self.change(|table| table.with_api_documents(clients, roles, &self.token_key))
            .map_err(LoadError::Table)
    }
}

/// Why the API-made clients and roles did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the clients and roles of the log: {}", .0.message)]
    Engine(ApiError),
    #[error("the clients and roles of the log do not make a table: {0}")]
    Table(clients::Error),
}

/// The file of a data directory that keeps the token key made for it.
const TOKEN_KEY_FILE: &str = "auth-token-key";

/// The token key of a server without `[auth] token_key` and without a cluster: the one kept
/// in the data directory, made (random, readable by the owner only) if there is none.
pub fn data_dir_token_key(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(TOKEN_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    std::fs::create_dir_all(data_dir)?;
    let key = random_seed();
    let partial = data_dir.join(format!("{TOKEN_KEY_FILE}.partial"));
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial)?;
        file.write_all(key.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn default_access_has_the_queue_client_and_an_anonymous_role() {
        let settings = &Settings::defaults().auth;
        let access = Access::from_settings(settings, None).unwrap();
        assert_eq!(access.queue_credentials.access_token.len(), 44);
        assert!(
            access
                .clients()
                .scopes_of(QUEUE_CLIENT_ID)
                .unwrap()
                .satisfies_scope("queue:anything")
        );
        assert!(access.clients().scopes_of(ROOT_CLIENT_ID).is_none());
        let clients = access.clients();
        let anonymous = clients.anonymous_scopes();
        assert!(anonymous.satisfies_scope("queue:get-task:fN1SbArXTPSVFNUvaOlinQ"));
        assert!(anonymous.satisfies_scope("queue:get-artifact:public/logs/live.log"));
        assert!(!anonymous.satisfies_scope("queue:get-artifact:private/x"));
        assert!(!anonymous.satisfies_scope("queue:create-task:lowest:p/w"));

        // A fresh token at every start unless one is configured.
        let again = Access::from_settings(settings, Some("root-token")).unwrap();
        assert_ne!(
            again.queue_credentials.access_token,
            access.queue_credentials.access_token
        );
        assert!(again.clients().scopes_of(ROOT_CLIENT_ID).is_some());
        let configured = AuthSettings {
            queue_access_token: "queue-token".into(),
            ..settings.clone()
        };
        let access = Access::from_settings(&configured, None).unwrap();
        assert_eq!(access.queue_credentials.access_token, "queue-token");
    }

    #[test]
    fn a_configured_client_may_not_take_a_static_name() {
        let mut settings = Settings::defaults().auth.clone();
        settings.clients.push(Client {
            client_id: ROOT_CLIENT_ID.into(),
            access_token: "x".into(),
            scopes: vec![],
            expires: None,
            disabled: false,
        });
        let error = Access::from_settings(&settings, Some("root")).unwrap_err();
        assert!(error.to_string().contains("defined twice"), "{error}");
    }
}
