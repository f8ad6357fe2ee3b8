//! What the desktop and the API may ask of a call in progress, and the answers. The call
//! machine decides ([`super::call::Call::handle_control`]); the registry here only finds the
//! task of a live call and carries the request to it and the answer back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::acd::AgentId;

/// A request from a desktop or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// End the call: BYE to both legs.
    Hangup,
    /// Music to the caller, the agent's phone held by re-INVITE.
    Hold,
    /// Back to talking.
    Resume,
    /// Hand the caller over at once (a blind transfer): the agent's leg is hung up, the caller
    /// hears music while the target rings.
    Transfer(TransferTo),
    /// An attended transfer: the caller hears music while the target rings, then the agent
    /// talks to the target (a consultation) before handing the caller over.
    Consult(TransferTo),
    /// Joins the caller and the consulted target; the first agent's phone is hung up.
    CompleteTransfer,
    /// Hangs up the consultation; the agent is back with the caller.
    CancelTransfer,
    /// screenpop is shutting down and the drain is over: the call ends whatever its phase
    /// (BYE both ways; a caller not answered yet gets 503). Sent by the server, never by a
    /// desktop.
    Shutdown,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    /// This agent's phone (and the call's queue, should it not answer).
    Agent(AgentId),
    /// Back into a queue.
    Queue(crate::acd::QueueId),
    /// Out through the `[outbound]` gateway (the number already checked and the gateway
    /// resolved by the dialer).
    Number(Box<crate::calls::outbound::Gateway>),
}

/// Who asks: only the agent who has the call, or a supervisor, controls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controller {
    pub agent: Option<AgentId>,
    pub supervisor: bool,
}

/// Why a request was not carried out; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such call in progress, or not one this user may control (the two are not told
    /// apart, so an agent cannot learn which other calls exist): 404.
    #[error("no such call in progress")]
    NotFound,
    /// The call is not in a state that allows it (on hold already, not answered yet, another
    /// request in progress): 409.
    #[error("{0}")]
    Conflict(&'static str),
    /// The agent's phone refused the re-INVITE; the call is as it was: 409.
    #[error("the phone refused the request with {0}; the call is as it was")]
    PhoneRefused(u16),
}

/// One request on its way to the call's task.
#[derive(Debug)]
pub struct ControlRequest {
    pub control: Control,
    pub by: Controller,
    pub reply: oneshot::Sender<Result<(), ControlError>>,
}

/// The live calls of this node that can be controlled, by screenpop's call id and by contact
/// log id (the two ids the desktop knows). A call registers when its task starts and is
/// removed when it ends.
#[derive(Default)]
pub struct Controls {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    calls: HashMap<String, mpsc::Sender<ControlRequest>>,
    logs: HashMap<i64, String>,
}

impl Controls {
    pub fn new() -> Arc<Controls> {
        Arc::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, call: &str, tx: mpsc::Sender<ControlRequest>) {
        self.lock().calls.insert(call.to_string(), tx);
    }

    /// The call's contact log row exists: it may be named by that id too.
    pub(crate) fn link_log(&self, call: &str, log_id: i64) {
        self.lock().logs.insert(log_id, call.to_string());
    }

    /// The live call whose contact log is `log_id`.
    pub(crate) fn call_of_log(&self, log_id: i64) -> Option<String> {
        self.lock().logs.get(&log_id).cloned()
    }

    pub(crate) fn remove(&self, call: &str) {
        let mut r = self.lock();
        r.calls.remove(call);
        r.logs.retain(|_, c| c != call);
    }

    /// Live calls on this node.
    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Carries `control` to the call named `id` (screenpop's call id, or a contact log id)
    /// and waits for its answer.
    pub async fn send(
        &self,
        id: &str,
        control: Control,
        by: Controller,
    ) -> Result<(), ControlError> {
        let tx = {
            let r = self.lock();
            let key = match id.parse::<i64>() {
                Ok(log) => r.logs.get(&log).cloned(),
                Err(_) => Some(id.to_string()),
            };
            key.and_then(|k| r.calls.get(&k).cloned())
        };
        let tx = tx.ok_or(ControlError::NotFound)?;
        let (reply, answer) = oneshot::channel();
        tx.send(ControlRequest { control, by, reply })
            .await
            .map_err(|_| ControlError::NotFound)?;
        // A call that ends before answering drops the sender: it is gone.
        answer.await.unwrap_or(Err(ControlError::NotFound))
    }
}
