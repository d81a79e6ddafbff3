//! Documents (secrets, index entries) in their partition's shard: a command's path is the
//! task's (decide → apply → append → reply once durable); reads and lists see the store and
//! what is not flushed yet.

use super::*;
use crate::model::document::{self, partition_key};
use crate::model::{Document, DocumentCommand, DocumentKind};

impl TaskShard {
    /// Decides and applies a command on the document `kind`/`name`, and returns the reply:
    /// the document as it is after the command (`None`: there is none).
    pub(super) fn run_document(
        &mut self,
        kind: DocumentKind,
        name: &str,
        command: DocumentCommand,
        client_id: Option<String>,
    ) -> Reply<Option<Document>> {
        let now = self.now();
        let decided = self
            .state
            .read_document(kind, name)
            .map_err(store_failed)
            .and_then(|current| document::decide(kind, name, current.as_ref(), command, now));
        let key = partition_key(kind, name);
        let committed = decided.and_then(|events| {
            let events = events
                .into_iter()
                .map(|event| (key.clone(), event))
                .collect();
            self.commit(now, client_id, events)
        });
        if let Err(error) = committed {
            return futures::future::ready(Err(error)).boxed();
        }
        match self.state.read_document(kind, name) {
            Ok(document) => self.when_durable(document),
            Err(error) => futures::future::ready(Err(store_failed(error))).boxed(),
        }
    }
}

/// Runs one command on one document of this shard.
#[derive(Message)]
#[rtype(result = "Reply<Option<Document>>")]
pub struct ExecuteDocument {
    pub kind: DocumentKind,
    pub name: String,
    pub command: DocumentCommand,
    pub client_id: Option<String>,
}

impl Handler<ExecuteDocument> for TaskShard {
    type Result = MessageResult<ExecuteDocument>;

    fn handle(&mut self, message: ExecuteDocument, context: &mut Context<Self>) -> Self::Result {
        let reply = self.run_document(
            message.kind,
            &message.name,
            message.command,
            message.client_id,
        );
        self.after_command(context);
        MessageResult(reply)
    }
}

/// Reads one document, as of everything durable.
#[derive(Message)]
#[rtype(result = "Reply<Option<Document>>")]
pub struct GetDocument {
    pub kind: DocumentKind,
    pub name: String,
}

impl Handler<GetDocument> for TaskShard {
    type Result = MessageResult<GetDocument>;

    fn handle(&mut self, message: GetDocument, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            match self.state.read_document(message.kind, &message.name) {
                Ok(document) => self.when_durable(document),
                Err(error) => futures::future::ready(Err(store_failed(error))).boxed(),
            },
        )
    }
}

/// Up to `limit` documents whose store keys start with `prefix`, after the key `after`, in
/// key order, as of everything durable.
#[derive(Message)]
#[rtype(result = "Reply<Vec<(String, Document)>>")]
pub struct ListDocuments {
    pub prefix: Vec<u8>,
    pub after: Option<Vec<u8>>,
    pub limit: usize,
}

impl Handler<ListDocuments> for TaskShard {
    type Result = MessageResult<ListDocuments>;

    fn handle(&mut self, message: ListDocuments, _: &mut Context<Self>) -> Self::Result {
        let listed = self
            .state
            .documents(&message.prefix, message.after, message.limit);
        MessageResult(match listed {
            Ok(documents) => self.when_durable(documents),
            Err(error) => futures::future::ready(Err(store_failed(error))).boxed(),
        })
    }
}

/// Up to `limit` namespaces of the index under `parent`, after `after`, with when each
/// expires, as of everything durable.
#[derive(Message)]
#[rtype(result = "Reply<Vec<(String, Timestamp)>>")]
pub struct ListNamespaces {
    pub parent: String,
    pub after: Option<String>,
    pub limit: usize,
}

impl Handler<ListNamespaces> for TaskShard {
    type Result = MessageResult<ListNamespaces>;

    fn handle(&mut self, message: ListNamespaces, _: &mut Context<Self>) -> Self::Result {
        let listed =
            self.state
                .namespaces(&message.parent, message.after.as_deref(), message.limit);
        MessageResult(match listed {
            Ok(namespaces) => self.when_durable(namespaces),
            Err(error) => futures::future::ready(Err(store_failed(error))).boxed(),
        })
    }
}
