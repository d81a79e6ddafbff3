//! Who may call the API: the static client table and roles of `[auth]`, plus the two clients
//! every deployment has, as Taskcluster's static clients: `static/taskcluster/root` (when its
//! token is in the environment) and the queue's own `static/taskcluster/queue`, whose
//! credentials sign the task credentials of every claim and reclaim, so that requests made
//! with those verify against this same table.

use crate::auth::credentials::random_seed;
use crate::auth::{Client, Clients, Credentials, Roles, clients, roles};
use crate::settings::AuthSettings;

pub const ROOT_CLIENT_ID: &str = "static/taskcluster/root";
pub const QUEUE_CLIENT_ID: &str = "static/taskcluster/queue";
/// The environment variable holding the root client's access token.
pub const ROOT_ACCESS_TOKEN_VARIABLE: &str = "TASKFOLD_ROOT_ACCESS_TOKEN";

/// The clients and roles requests are checked against, and the credentials the queue signs
/// with.
#[derive(Clone, Debug)]
pub struct Access {
    pub clients: Clients,
    /// `static/taskcluster/queue`: the issuer of task credentials.
    pub queue_credentials: Credentials,
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
        let roles = Roles::new(settings.roles.iter().cloned())?;
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
            clients: Clients::new(table, roles)?,
            queue_credentials,
        })
    }
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
                .clients
                .scopes_of(QUEUE_CLIENT_ID)
                .unwrap()
                .satisfies_scope("queue:anything")
        );
        assert!(access.clients.scopes_of(ROOT_CLIENT_ID).is_none());
        let anonymous = access.clients.anonymous_scopes();
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
        assert!(again.clients.scopes_of(ROOT_CLIENT_ID).is_some());
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
