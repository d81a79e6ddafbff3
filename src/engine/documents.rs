//! The documents of the services beside the queue, over every partition: a command or read
//! goes to the document's shard (here or on its owner node); a list asks every partition of
//! every node and merges the parts in name order. Changes to the kinds every node follows
//! ([`is_watched`]: clients and roles, which every request is authenticated against, and
//! hooks) go to this node's watchers before the command returns, and to every other node's.

use super::cluster::wire::{self, Answer, Call};
use super::shard::{ListDocuments, ListNamespaces};
use super::{Engine, ask, cluster};
use crate::model::{ApiError, Document, DocumentCommand, DocumentKind, Timestamp};

/// How long a change of a client or role waits for each other node to hear of it.
const PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Hears of a changed document: its kind, name, and what it is now (`None`: removed).
pub type Watcher = std::sync::Arc<dyn Fn(DocumentKind, &str, Option<&Document>) + Send + Sync>;

/// Whether every node hears of changes to the documents of `kind`: clients and roles, which
/// every node keeps a table of, and hooks, whose bindings every node's listener follows.
pub fn is_watched(kind: DocumentKind) -> bool {
    matches!(
        kind,
        DocumentKind::Client | DocumentKind::Role | DocumentKind::Hook
    )
}

impl Engine {
    /// Runs a command on a document; resolves once its events are durable, with the document
    /// as it is after it (`None`: there is none).
    pub async fn execute_document(
        &self,
        kind: DocumentKind,
        name: &str,
        command: DocumentCommand,
        client_id: Option<String>,
    ) -> Result<Option<Document>, ApiError> {
        let call = Call::Document {
            kind,
            name: name.to_owned(),
            command,
            client_id,
        };
        let document = match self.on_owner(call).await? {
            Answer::Document(document) => document,
            other => return Err(wire::unexpected(&other)),
        };
        if is_watched(kind) {
            self.tell_watchers(kind, name, document.as_ref());
            self.tell_peers(kind, name, document.clone()).await;
        }
        Ok(document)
    }

    /// Adds a watcher of the documents of the [`is_watched`] kinds.
    pub fn watch_documents(&self, watcher: Watcher) {
        self.watchers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(watcher);
    }

    pub(super) fn tell_watchers(
        &self,
        kind: DocumentKind,
        name: &str,
        document: Option<&Document>,
    ) {
        let watchers = self
            .watchers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for watcher in &watchers {
            watcher(kind, name, document);
        }
    }

    /// Tells this node's watchers of every watched document of a partition it gained.
    pub(super) async fn announce_documents(&self, shard: &actix::Addr<super::shard::TaskShard>) {
        for kind in DocumentKind::ALL
            .into_iter()
            .filter(|kind| is_watched(*kind))
        {
            let prefix = crate::model::document::store_key(kind, "");
            let mut after = None;
            loop {
                let message = ListDocuments {
                    prefix: prefix.clone(),
                    after: after.take(),
                    limit: 1_000,
                };
                let Ok(page) = ask(shard, message).await else {
                    break;
                };
                for (name, document) in &page {
                    self.tell_watchers(kind, name, Some(document));
                }
                match page.last() {
                    Some((name, _)) if page.len() == 1_000 => {
                        after = Some(crate::model::document::store_key(kind, name));
                    }
                    _ => break,
                }
            }
        }
    }

    /// Tells every other node of a change, and waits until each has heard (or has not
    /// answered within [`PEER_WAIT`]): a client disabled through one node is refused by every
    /// node once the call answers.
    async fn tell_peers(&self, kind: DocumentKind, name: &str, document: Option<Document>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let call = Call::DocumentChanged {
            kind,
            name: name.to_owned(),
            document,
        };
        let secret = &cluster.settings.secret;
        let told = cluster.directory.peers().into_iter().map(|url| {
            let call = &call;
            async move {
                if let Err(error) = cluster::peer::call(&url, secret, call, PEER_WAIT).await {
                    tracing::warn!(%url, error = %error.0, "a node did not hear of a changed client or role");
                }
            }
        });
        futures::future::join_all(told).await;
    }

    /// The document as of everything durable (an expired one too: the caller decides).
    pub async fn document(
        &self,
        kind: DocumentKind,
        name: &str,
    ) -> Result<Option<Document>, ApiError> {
        let call = Call::GetDocument {
            kind,
            name: name.to_owned(),
        };
        match self.on_owner(call).await? {
            Answer::Document(document) => Ok(document),
            other => Err(wire::unexpected(&other)),
        }
    }

    /// Up to `limit` documents whose store keys start with `prefix`, after the key `after`,
    /// in key order, over every partition; and whether more follow.
    pub async fn documents(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<(String, Document)>, bool), ApiError> {
        self.list_documents(prefix, after, limit, true).await
    }

    /// [`Engine::documents`] over the partitions this node serves only (for what only the
    /// owner of a partition does, such as firing its hooks).
    pub async fn documents_served_here(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<(String, Document)>, bool), ApiError> {
        self.list_documents(prefix, after, limit, false).await
    }

    async fn list_documents(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        everywhere: bool,
    ) -> Result<(Vec<(String, Document)>, bool), ApiError> {
        // One more than asked from each: all that follow may be in one partition.
        let call = Call::ListDocuments {
            prefix,
            after,
            limit: limit + 1,
        };
        let mut found = self.documents_here(&call).await?;
        if everywhere {
            for answer in self.ask_peers(&call).await {
                if let Answer::Documents(part) = answer {
                    found.extend(part);
                }
            }
        }
        found.sort_by(|(a, _), (b, _)| a.cmp(b));
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }

    /// Up to `limit` namespaces of the index under `parent` after `after`, in name order, each
    /// with the latest expiry any partition has for it; and whether more follow.
    pub async fn namespaces(
        &self,
        parent: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(String, Timestamp)>, bool), ApiError> {
        let call = Call::ListNamespaces {
            parent: parent.to_owned(),
            after,
            limit: limit + 1,
        };
        let mut found = self.namespaces_here(&call).await?;
        for answer in self.ask_peers(&call).await {
            if let Answer::Namespaces(part) = answer {
                found.extend(part);
            }
        }
        // Several partitions may have one namespace: the latest expiry stands.
        found.sort_by(|(a, at), (b, bt)| a.cmp(b).then(bt.cmp(at)));
        found.dedup_by(|later, earlier| later.0 == earlier.0);
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }

    /// This node's part of a [`Call::ListDocuments`].
    pub(super) async fn documents_here(
        &self,
        call: &Call,
    ) -> Result<Vec<(String, Document)>, ApiError> {
        let Call::ListDocuments {
            prefix,
            after,
            limit,
        } = call
        else {
            return Err(wire::unexpected(&Answer::Done));
        };
        self.ask_local_shards(|| ListDocuments {
            prefix: prefix.clone(),
            after: after.clone(),
            limit: *limit,
        })
        .await
    }

    /// This node's part of a [`Call::ListNamespaces`].
    pub(super) async fn namespaces_here(
        &self,
        call: &Call,
    ) -> Result<Vec<(String, Timestamp)>, ApiError> {
        let Call::ListNamespaces {
            parent,
            after,
            limit,
        } = call
        else {
            return Err(wire::unexpected(&Answer::Done));
        };
        self.ask_local_shards(|| ListNamespaces {
            parent: parent.clone(),
            after: after.clone(),
            limit: *limit,
        })
        .await
    }

    /// Every local shard's answer to the list `message` makes, together.
    async fn ask_local_shards<M, T>(&self, message: impl Fn() -> M) -> Result<Vec<T>, ApiError>
    where
        M: actix::Message<Result = super::shard::Reply<Vec<T>>> + Send + 'static,
        super::shard::TaskShard: actix::Handler<M>,
        T: Send + 'static,
    {
        let parts = self.partitions.local().into_iter().map(|(_, shard)| {
            let message = message();
            async move { ask(&shard, message).await }
        });
        let mut found = Vec::new();
        for part in futures::future::join_all(parts).await {
            found.extend(part?);
        }
        Ok(found)
    }
}

impl Engine {
    /// Puts the index entries a completed task's `index.` routes ask for; resolves once they
    /// are durable. Repeating it for the same task changes nothing more.
    pub async fn index_completed(&self, task: &crate::model::Task) -> Result<(), ApiError> {
        let entries = crate::model::document::index_entries(task);
        let puts = entries.into_iter().map(|(path, entry)| async move {
            let command = DocumentCommand::Put(Document::IndexedTask(entry));
            self.execute_document(DocumentKind::IndexedTask, &path, command, None)
                .await
        });
        for put in futures::future::join_all(puts).await {
            put?;
        }
        Ok(())
    }
}
