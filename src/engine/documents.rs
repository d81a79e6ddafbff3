//! The documents of the services beside the queue, over every partition: a command or read
//! goes to the document's shard (here or on its owner node); a list asks every partition of
//! every node and merges the parts in name order.

use super::cluster::wire::{self, Answer, Call};
use super::shard::{ListDocuments, ListNamespaces};
use super::{Engine, ask};
use crate::model::{ApiError, Document, DocumentCommand, DocumentKind, Timestamp};

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
        match self.on_owner(call).await? {
            Answer::Document(document) => Ok(document),
            other => Err(wire::unexpected(&other)),
        }
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
        // One more than asked from each: all that follow may be in one partition.
        let call = Call::ListDocuments {
            prefix,
            after,
            limit: limit + 1,
        };
        let mut found = self.documents_here(&call).await?;
        for answer in self.ask_peers(&call).await {
            if let Answer::Documents(part) = answer {
                found.extend(part);
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
        let parts = self.partitions.local().into_iter().map(|(_, shard)| {
            let message = ListDocuments {
                prefix: prefix.clone(),
                after: after.clone(),
                limit: *limit,
            };
            async move { ask(&shard, message).await }
        });
        let mut found = Vec::new();
        for part in futures::future::join_all(parts).await {
            found.extend(part?);
        }
        Ok(found)
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
        let parts = self.partitions.local().into_iter().map(|(_, shard)| {
            let message = ListNamespaces {
                parent: parent.clone(),
                after: after.clone(),
                limit: *limit,
            };
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
