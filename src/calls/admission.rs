//! Admission: whether a new INVITE becomes a call. The dispatcher hands over each new INVITE;
//! this checks it, binds the call's RTP ports, builds the [`Call`] machine and starts its task,
//! or answers the INVITE itself with the reason it cannot be taken.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, info_span, Instrument};

use super::call::{self, Call, CallConfig, CallInit, Refusal};
use super::task;
use crate::acd::runtime::{AcdHandle, AgentTarget};
use crate::config::Profile;
use crate::events::EventBus;
use crate::ids::CallKey;
use crate::media::ports::PortPool;
use crate::media::recorder::RecorderHandle;
use crate::media::relay::MediaEngine;
use crate::sip::caller_id::CallerId;
use crate::sip::message::Request;
use crate::sip::transaction::{ServerKey, ServerTransaction, TxOutput};
use crate::store::Store;
use crate::time::epoch_ms;
use crate::transport::{Peer, Routed, SipSocket};

/// What every call task shares: the edges the machine's outputs go to.
pub(crate) struct CallEnv {
    pub sip: SipSocket,
    /// What the call machines are built with.
    pub call: Arc<CallConfig>,
    pub profile: Arc<Profile>,
    pub ports: Arc<PortPool>,
    pub media: MediaEngine,
    pub recorder: Arc<RecorderHandle>,
    pub ended: mpsc::UnboundedSender<CallEnded>,
    /// Customers and contact logs.
    pub store: Store,
    /// How caller numbers without their country or area code are read (the profile's
    /// `default_region` and `area_code`).
    pub plan: crate::phone::NumberPlan,
    /// Events for the desktops.
    pub bus: Arc<dyn EventBus>,
    /// Queues and agents: calls without a fixed agent target are routed here.
    pub acd: AcdHandle,
    /// New Call-IDs a call answers to (each agent it rings gets a fresh agent-leg Call-ID).
    pub routes: mpsc::UnboundedSender<Route>,
    /// The live calls the desktops and the API control.
    pub controls: Arc<super::control::Controls>,
    /// Music on hold and in queues.
    pub music: crate::media::music::MusicFiles,
    /// The calls not yet written (for a shutdown to wait on), and whether new ones are taken.
    pub in_flight: Arc<super::drain::InFlight>,
}

/// Tells the dispatcher to send a Call-ID's messages to a call task.
pub struct Route {
    pub call_id: String,
    pub owner: String,
    pub tx: mpsc::Sender<Routed>,
}

/// A new inbound call handed over by the dispatcher.
pub(crate) struct NewCall {
    pub invite: Request,
    pub peer: Peer,
    /// When the INVITE came off the socket.
    pub received: Instant,
    pub caller: CallerId,
    pub trunk: String,
    /// A fixed agent target (the trunk's `agent` setting); `None` routes through the ACD.
    pub agent: Option<AgentTarget>,
}

/// The call-ids a call answers to, so the dispatcher can route to it.
pub(crate) struct CallHandle {
    pub id: String,
    pub call_ids: Vec<String>,
    pub tx: mpsc::Sender<Routed>,
}

/// Sent when a call task exits.
#[derive(Debug)]
pub struct CallEnded {
    /// The call's own id: routes are removed only if they still point at this call.
    pub id: String,
    pub call_ids: Vec<String>,
    /// Its finished transactions, for the dispatcher to answer their retransmissions.
    pub remains: Vec<(crate::sip::transaction::Remains, crate::sip::peer::Peer)>,
}

/// Starts a call task; returns `None` after answering the caller itself when the call cannot be
/// taken (the INVITE has already been answered in that case).
pub fn spawn(env: Arc<CallEnv>, new: NewCall) -> Option<CallHandle> {
    let wall = SystemTime::now();
    let id = format!("{}-{:08x}", epoch_ms(wall), rand::random::<u32>());
    let span = info_span!("call", call_id = %new.invite.call_id().unwrap_or_default(), id = %id);
    let _enter = span.enter();
    let key = ServerKey::of(&new.invite)?;
    let refuse = |refusal: Refusal| {
        info!(status = refusal.status, why = refusal.why, "call refused");
        let reliable = new.peer.transport.reliable();
        let mut server =
            ServerTransaction::new(new.invite.clone(), key.clone(), reliable, env.call.timers);
        let tag = format!("{:016x}", rand::random::<u64>());
        server.respond(
            Instant::now(),
            &call::refusal_response(&new.invite, refusal, &tag, env.call.min_se_secs),
        );
        while let Some(o) = server.poll_output() {
            if let TxOutput::Transmit(b) = o {
                env.sip.send(new.peer, b);
            }
        }
        // The transaction is dropped: an ACK or retransmission finds no call and is answered
        // statelessly again by the dispatcher.
        None
    };
    let offer = match call::screen(&new.invite, env.call.min_se_secs) {
        Ok(offer) => offer,
        Err(r) => return refuse(r),
    };
    let exhausted = Refusal {
        status: 503,
        why: "RTP port pool exhausted",
    };
    let Some(caller_sock) = env.ports.bind(env.call.media_ip) else {
        return refuse(exhausted);
    };
    let Some(agent_sock) = env.ports.bind(env.call.media_ip) else {
        return refuse(exhausted);
    };
    let init = CallInit {
        id: CallKey::new(id.clone()),
        invite: new.invite.clone(),
        offer,
        peer: new.peer,
        received: new.received,
        wall,
        caller: new.caller,
        trunk: new.trunk,
        agent: new.agent,
        caller_port: caller_sock.port(),
        agent_port: agent_sock.port(),
        seed: rand::random(),
    };
    let call = match Call::new(env.call.clone(), init) {
        Ok(call) => call,
        // The sockets drop here and their ports go back to the pool.
        Err(r) => return refuse(r),
    };
    let (media, media_events) = env.media.add_call(caller_sock, agent_sock);
    let (tx, rx) = mpsc::channel(64);
    let call_ids = call.call_ids();
    drop(_enter);
    let (control_tx, control_rx) = mpsc::channel(8);
    env.controls.register(&id, control_tx);
    let task = task::CallTask::new(env, call, media, tx.clone());
    tokio::spawn(task.run(rx, media_events, control_rx).instrument(span));
    Some(CallHandle { id, call_ids, tx })
}
