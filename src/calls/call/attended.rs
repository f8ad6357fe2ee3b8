//! Attended transfer: the agent asks for a consultation with a target (another agent, whoever
//! of a queue is free, or a number through the gateway), talks to them while the caller hears
//! music, then completes (the caller and the target are joined, the first phone is hung up) or
//! cancels (the agent is back with the caller).
//!
//! The consultation is a third leg of the call ([`ConsultLeg`]) on ports of its own: the media
//! engine bridges the agent's leg to it while it lasts and, on completion, makes it the agent
//! leg, so neither phone is re-INVITEd and the recording goes on in one file. Should the first
//! agent hang up during the consultation, the caller goes to the target when it answers (or
//! back into the queue when it does not): nobody is left on hold with nobody.

use super::*;
use crate::calls::consult::{ConsultEvent, ConsultLeg, ConsultOutput, ConsultStart, Handover};
use crate::events::payload::CallConsult;

/// What the task prepared for a consultation: the target reserved in the ACD, its address
/// resolved and ports bound (already handed to the media engine).
#[derive(Debug, Clone)]
pub struct ConsultReady {
    /// The agent consulted; `None` for an outside number.
    pub agent: Option<AgentId>,
    /// Who the target is, for the desktops: the agent's name or the number.
    pub name: String,
    pub target: AgentTarget,
    /// Where the target is reached (resolved).
    pub peer: Peer,
    /// Our RTP port for the consultation.
    pub port: u16,
    /// Set for an outside number.
    pub gateway: Option<Box<Gateway>>,
}

/// Why a consultation could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultRefused {
    Busy,
    Unreachable,
    NobodyFree,
    NotAnAgent,
    NoPorts,
}

impl ConsultRefused {
    fn reason(self) -> &'static str {
        match self {
            ConsultRefused::Busy => "the target agent is ringing or on a call",
            ConsultRefused::Unreachable => "the target agent's phone cannot be reached",
            ConsultRefused::NobodyFree => "nobody in that queue is available to consult",
            ConsultRefused::NotAnAgent => "the target is not an active agent",
            ConsultRefused::NoPorts => "no media ports are free for the consultation",
        }
    }
}

/// An attended transfer in progress.
pub(super) struct Consulting {
    /// The control request waiting for the consultation to be set up.
    token: Option<u64>,
    key: CallKey,
    agent: Option<AgentId>,
    number: Option<String>,
    name: String,
    /// `None` while the task prepares the target.
    leg: Option<ConsultLeg>,
    /// The agent hears ringback until the target answers or sends early media.
    ringback: bool,
    answered: bool,
    /// The first agent hung up while the target rang: the caller goes to the target when it
    /// answers.
    handoff: bool,
}

impl Call {
    /// `Control::Consult`: checks, then asks the task to reserve and find the target; the
    /// answer to `token` waits for [`Call::handle_consult`].
    pub(super) fn start_consult(
        &mut self,
        token: u64,
        to: TransferTo,
    ) -> Result<bool, ControlError> {
        if self.consult.is_some() {
            return Err(ControlError::Conflict(
                "an attended transfer of this call is in progress",
            ));
        }
        if !self.acd_mode && !matches!(to, TransferTo::Number(_)) {
            return Err(ControlError::Conflict(
                "calls on this trunk ring a fixed phone: there is no agent to consult",
            ));
        }
        let a = LegId::Agent.index();
        if self.hold.is_some() || self.held[a] || self.local_dir[a] != Direction::SendRecv {
            return Err(ControlError::Conflict(
                "the call is on hold: resume it before consulting",
            ));
        }
        if self.offer_open(LegId::Agent) || self.refer_pending {
            return Err(ControlError::Conflict("the phone is being re-INVITEd"));
        }
        let (agent, number) = match &to {
            TransferTo::Agent(a) if Some(*a) == self.agent_id => {
                return Err(ControlError::Conflict(
                    "the call is with that agent already",
                ));
            }
            TransferTo::Agent(a) => (Some(*a), None),
            TransferTo::Queue(_) => (None, None),
            TransferTo::Number(gw) => (None, Some(gw.number.clone())),
        };
        self.consults += 1;
        let key = CallKey::new(format!("{}~consult{}", self.id, self.consults));
        info!(to = ?to, "attended transfer: preparing the consultation");
        self.consult = Some(Consulting {
            token: Some(token),
            key: key.clone(),
            agent,
            name: number.clone().unwrap_or_default(),
            number,
            leg: None,
            ringback: false,
            answered: false,
            handoff: false,
        });
        self.out.push_back(Output::Consult {
            key,
            to,
            exclude: self.agent_id,
        });
        Ok(false)
    }

    /// The task's answer to [`Output::Consult`] for the consultation `key`: rings the target,
    /// or says why not.
    pub fn handle_consult(
        &mut self,
        now: Instant,
        key: CallKey,
        ready: Result<ConsultReady, ConsultRefused>,
    ) {
        let waiting = self
            .consult
            .as_ref()
            .is_some_and(|c| c.leg.is_none() && c.key == key);
        if !waiting || self.phase != Phase::Up {
            // Cancelled or ended while the target was looked up: give it back (the task hands
            // the engine ports only for the consultation the call awaits).
            if let Ok(r) = ready {
                if r.agent.is_some() {
                    self.tell_acd(AcdInput::Ended { call: key });
                }
            }
            self.pump(now);
            return;
        }
        match ready {
            Err(why) => {
                info!(reason = why.reason(), "attended transfer refused");
                if let Some(c) = self.consult.take() {
                    if let Some(token) = c.token {
                        self.reply(token, Err(ControlError::Conflict(why.reason())));
                    }
                    if c.handoff {
                        // The agent hung up meanwhile: nobody is left for the caller here.
                        self.requeue_caller(now);
                    }
                }
            }
            Ok(r) => self.ring_consulted(now, r),
        }
        self.pump(now);
    }

    fn ring_consulted(&mut self, now: Instant, r: ConsultReady) {
        let presented = match &r.gateway {
            Some(gw) => CallerId {
                raw: gw.caller_id.clone(),
                number: Some(gw.caller_id.clone()),
                name: None,
                withheld: false,
            },
            None => self.caller.clone(),
        };
        let (mut dialog, _) = agent_dialog(
            &self.cfg.me,
            &mut self.rng,
            &presented,
            &r.target,
            self.caller_leg.peer,
        );
        dialog.peer = r.peer;
        let mut local = self.agent_media.local.clone();
        local.port = r.port;
        local.session_id = self.rng.gen::<u32>() as u64;
        local.session_version = 1;
        // Gateways take RTP/AVP; phones get SRTP where the profile says.
        local.srtp = (r.gateway.is_none() && self.cfg.agent_srtp.offers(r.peer.transport))
            .then(|| LocalSrtp::new(MasterKey::generate()));
        let mut headers = Vec::new();
        if let Some(n) = &presented.number {
            headers.push((
                HeaderName::PAssertedIdentity,
                format!("<sip:{n}@{}>", self.cfg.me.host),
            ));
        }
        headers.push((
            HeaderName::Other("X-Screenpop-Call".into()),
            self.id.to_string(),
        ));
        let ring_timeout = r
            .gateway
            .as_ref()
            .map_or(self.cfg.ring_timeout, |g| g.ring_timeout);
        let call_id = dialog.call_id.clone();
        self.consult_call_ids.push(call_id.clone());
        self.out.push_back(Output::Listen { call_id });
        self.media(MediaCommand::ConsultSignallingIp(r.peer.addr.ip()));
        // The caller waits with music; the agent hears the target ring.
        self.on_hold = true;
        self.media(MediaCommand::Watch(self.media_watch()));
        self.media(MediaCommand::Play(LegId::Caller, Music::Hold));
        self.media(MediaCommand::Play(LegId::Agent, Music::Ringback));
        let leg = ConsultLeg::start(
            now,
            ConsultStart {
                me: self.cfg.me.clone(),
                timers: self.cfg.timers,
                codec: self.codec,
                dialog,
                local,
                gateway: r.gateway.map(|g| *g),
                headers,
                ring_timeout,
            },
        );
        let from = self.agent_id;
        let Some(c) = self.consult.as_mut() else {
            return;
        };
        c.leg = Some(leg);
        c.ringback = true;
        c.agent = r.agent;
        c.name = r.name;
        let token = c.token.take();
        info!(to = %c.name, "attended transfer: ringing the consulted party");
        if let Some(b) = r.agent {
            // The target's desktop pops with the same customer card (its latency counted from
            // the consultation, not from the caller's INVITE).
            let event = self.offered_event(Some(b), now, from);
            self.publish(event);
            self.publish_consult(now, Some(b), from, "ringing", None);
        }
        self.publish_consult(now, from, r.agent, "ringing", None);
        if let Some(token) = token {
            self.reply(token, Ok(()));
        }
        self.drive_consult(now);
    }

    /// Whether the call still waits for the consultation `key` to be prepared: the task hands
    /// the media engine its ports only then.
    pub fn awaits_consult(&self, key: &CallKey) -> bool {
        self.phase == Phase::Up
            && self
                .consult
                .as_ref()
                .is_some_and(|c| c.leg.is_none() && c.key == *key)
    }

    /// `call.consult` to `audience`'s desktops about the consultation with `with`.
    fn publish_consult(
        &mut self,
        now: Instant,
        audience: Option<AgentId>,
        with: Option<AgentId>,
        state: &'static str,
        reason: Option<&str>,
    ) {
        let Some(c) = self.consult.as_ref() else {
            return;
        };
        let ev = CallConsult {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: audience,
            with_agent_id: with,
            with_name: c.name.clone(),
            number: c.number.clone(),
            state,
            reason: reason.map(str::to_string),
            at: crate::time::rfc3339(self.wall(now)),
        };
        self.publish(Event::new(Payload::CallConsult(ev)));
    }

    /// The consulted agent's pop closes: the consultation is over.
    fn publish_withdrawn(&mut self, agent: AgentId, reason: &str) {
        self.publish(Event::new(Payload::CallWithdrawn(CallWithdrawn {
            call_id: self.id.clone(),
            agent_id: agent,
            reason: reason.to_string(),
        })));
    }

    /// Carries out what the consultation legs asked for; a handoff waiting for the leg to
    /// settle (an offer was in flight) completes as soon as it has.
    pub(super) fn drive_consult(&mut self, now: Instant) {
        self.drain_consult(now);
        let settle = self
            .consult
            .as_ref()
            .is_some_and(|c| c.handoff && c.answered);
        if settle && self.complete(now) {
            self.drain_consult(now);
        }
    }

    fn drain_consult(&mut self, now: Instant) {
        loop {
            let next = self
                .consult
                .as_mut()
                .and_then(|c| c.leg.as_mut())
                .and_then(ConsultLeg::poll_output);
            match next {
                Some(ConsultOutput::Transmit { peer, bytes }) => self.send(peer, bytes),
                Some(ConsultOutput::Event(ev)) => self.on_consult_event(now, ev),
                None => break,
            }
        }
        let mut sends = Vec::new();
        for leg in &mut self.consults_done {
            while let Some(o) = leg.poll_output() {
                if let ConsultOutput::Transmit { peer, bytes } = o {
                    sends.push((peer, bytes));
                }
            }
        }
        for (peer, bytes) in sends {
            self.send(peer, bytes);
        }
        // A leg that lingered its time out may still owe an ACK to a repeated refusal.
        for leg in self.consults_done.iter().filter(|l| l.is_done(now)) {
            self.consult_remains.extend(leg.remains());
        }
        self.consult_remains.retain(|(r, _)| match r {
            Remains::Reack { until, .. } | Remains::Replay { until, .. } => now < *until,
            Remains::Nothing => false,
        });
        self.consults_done.retain(|l| !l.is_done(now));
    }

    /// A message on a consultation's Call-ID; false when it is not one.
    pub(super) fn consult_message(&mut self, now: Instant, msg: &Message, peer: Peer) -> bool {
        let call_id = msg.headers().get(&HeaderName::CallId).unwrap_or("");
        let active = self
            .consult
            .as_mut()
            .and_then(|c| c.leg.as_mut())
            .filter(|l| l.call_id() == call_id);
        let leg = match active {
            Some(l) => l,
            None => match self
                .consults_done
                .iter_mut()
                .find(|l| l.call_id() == call_id)
            {
                Some(l) => l,
                None => return false,
            },
        };
        leg.handle_message(now, msg.clone(), peer);
        self.drive_consult(now);
        true
    }

    /// Timers of the consultation legs.
    pub(super) fn consult_timeout(&mut self, now: Instant) {
        if let Some(l) = self.consult.as_mut().and_then(|c| c.leg.as_mut()) {
            l.handle_timeout(now);
        }
        for l in &mut self.consults_done {
            l.handle_timeout(now);
        }
        self.drive_consult(now);
    }

    pub(super) fn consult_deadline(&self) -> Option<Instant> {
        self.consult
            .as_ref()
            .and_then(|c| c.leg.as_ref())
            .into_iter()
            .chain(self.consults_done.iter())
            .filter_map(ConsultLeg::poll_timeout)
            .min()
    }

    fn on_consult_event(&mut self, now: Instant, ev: ConsultEvent) {
        match ev {
            ConsultEvent::Ringing => {}
            ConsultEvent::Media(remote) => {
                self.media(MediaCommand::ConsultRemote(remote));
                // A gateway's early media (the network's ringback, an announcement) is heard
                // in place of ours.
                let early = self
                    .consult
                    .as_ref()
                    .is_some_and(|c| c.number.is_some() && !c.answered);
                if early {
                    self.stop_consult_ringback();
                }
            }
            ConsultEvent::Answered => {
                self.stop_consult_ringback();
                let from = self.agent_id;
                let Some(c) = self.consult.as_mut() else {
                    return;
                };
                c.answered = true;
                let (to, handoff) = (c.agent, c.handoff);
                info!("attended transfer: consulting");
                self.publish_consult(now, from, to, "talking", None);
                if to.is_some() {
                    self.publish_consult(now, to, from, "talking", None);
                }
                if handoff {
                    self.complete(now);
                }
            }
            ConsultEvent::Failed(status) => {
                let why = match status {
                    486 | 600 => "busy",
                    603 | 403 => "declined",
                    408 | 480 | 487 => "no answer",
                    _ => "failed",
                };
                self.consult_over(now, why);
            }
            ConsultEvent::HungUp => self.consult_over(now, "hung up"),
        }
    }

    fn stop_consult_ringback(&mut self) {
        if let Some(c) = self.consult.as_mut() {
            if std::mem::take(&mut c.ringback) {
                self.media(MediaCommand::StopPlaying(LegId::Agent));
            }
        }
    }

    /// `Control::CompleteTransfer`.
    pub(super) fn complete_transfer(&mut self, now: Instant) -> Result<(), ControlError> {
        match self.consult.as_ref() {
            None => Err(ControlError::Conflict(
                "no attended transfer is in progress",
            )),
            Some(c) if !c.answered => Err(ControlError::Conflict(
                "the consulted party has not answered yet: cancel, or wait for the answer",
            )),
            Some(_) => {
                if self.complete(now) {
                    Ok(())
                } else {
                    Err(ControlError::Conflict(
                        "the consulted phone is being re-INVITEd: try again",
                    ))
                }
            }
        }
    }

    /// `Control::CancelTransfer`.
    pub(super) fn cancel_transfer(&mut self, now: Instant) -> Result<(), ControlError> {
        let Some(c) = self.consult.as_mut() else {
            return Err(ControlError::Conflict(
                "no attended transfer is in progress",
            ));
        };
        match c.leg.as_mut() {
            Some(leg) => leg.end(now),
            None => {
                // Still being prepared: its reservation is given back when it arrives.
                let (token, handoff) = (c.token.take(), c.handoff);
                if let Some(token) = token {
                    self.reply(token, Err(ControlError::Conflict("cancelled")));
                }
                self.consult = None;
                if handoff {
                    self.requeue_caller(now);
                }
                return Ok(());
            }
        }
        self.consult_over(now, "cancelled");
        self.drive_consult(now);
        Ok(())
    }

    /// The consultation is over without a transfer: the agent is back with the caller (or,
    /// when the agent already left, the caller goes back into the queue).
    fn consult_over(&mut self, now: Instant, why: &str) {
        let from = self.agent_id;
        self.publish_consult(now, from, None, "ended", Some(why));
        let Some(mut c) = self.consult.take() else {
            return;
        };
        info!(reason = why, "attended transfer: consultation over");
        if let Some(leg) = c.leg.take() {
            self.consults_done.push(leg);
        }
        self.media(MediaCommand::DropConsult);
        if c.ringback {
            self.media(MediaCommand::StopPlaying(LegId::Agent));
        }
        if let Some(b) = c.agent {
            self.tell_acd(AcdInput::Ended { call: c.key });
            self.publish_withdrawn(b, "consultation ended");
        }
        if c.handoff {
            self.requeue_caller(now);
            return;
        }
        if self.hold.is_none() {
            // Back to the caller (a phone that held meanwhile keeps the music on).
            self.media(MediaCommand::StopPlaying(LegId::Caller));
        }
        self.on_hold = self.held.iter().any(|h| *h) || self.hold.is_some();
        self.media(MediaCommand::Watch(self.media_watch()));
        // A hold the caller made meanwhile reaches the agent's phone now.
        if let Some(d) = self.mirror_deferred[LegId::Agent.index()] {
            self.mirror_to(now, LegId::Agent, d);
        }
    }

    /// The first agent hung up during the consultation. Returns false when there is none.
    pub(super) fn agent_left_consultation(&mut self, now: Instant) -> bool {
        let Some(c) = self.consult.as_mut() else {
            return false;
        };
        info!("the agent left during the consultation: the caller goes to the target");
        c.handoff = true;
        let answered = c.answered;
        self.agent_answered = false;
        self.close_agent_span(now);
        if self.routed {
            self.tell_acd(AcdInput::AgentLeft {
                call: self.id.clone(),
            });
        }
        if answered {
            self.complete(now);
        }
        true
    }

    /// Joins the caller and the consulted party. False (nothing changed) while an offer is
    /// in flight on the consultation leg.
    fn complete(&mut self, now: Instant) -> bool {
        let Some(h) = self
            .consult
            .as_mut()
            .and_then(|c| c.leg.as_mut())
            .and_then(ConsultLeg::hand_over)
        else {
            return false;
        };
        let Some(c) = self.consult.take() else {
            return false;
        };
        let from = self.agent_id;
        info!(to = %c.name, "attended transfer completed");
        if self.agent_answered {
            self.bye(now, LegId::Agent);
        }
        if let Some(hold) = self.hold.take() {
            // The first phone held during the consultation: that hold ends with its leg.
            if let Some(span) = self.hold_span(hold, now) {
                self.holds.push(span);
            }
        }
        let deferred = self.mirror_deferred[LegId::Agent.index()];
        self.retire_agent_leg();
        self.take_over_leg(now, h);
        self.media(MediaCommand::PromoteConsult);
        self.media(MediaCommand::StopPlaying(LegId::Caller));
        self.media(MediaCommand::Hush(LegId::Agent, false));
        self.on_hold = self.held.iter().any(|h| *h);
        self.media(MediaCommand::Watch(self.media_watch()));
        self.close_agent_span(now);
        if self.routed {
            self.tell_acd(match c.agent {
                Some(_) => AcdInput::Joined {
                    call: self.id.clone(),
                    consult: c.key.clone(),
                    queue: self.queue.as_ref().map(|q| q.0),
                },
                None => AcdInput::AgentLeft {
                    call: self.id.clone(),
                },
            });
        } else if c.agent.is_some() {
            self.tell_acd(AcdInput::Ended {
                call: c.key.clone(),
            });
        }
        self.publish_transferred(now, from, (c.agent, None, c.number.clone()));
        self.agent_id = c.agent;
        if let Some(b) = c.agent {
            self.note_agent(b);
            self.agents_had.push((b, now, None));
        }
        self.publish(Event::new(Payload::CallAnswered(CallAnswered {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: self.agent_id,
            queue_id: self.queue.as_ref().map(|q| q.0),
            answered_at: crate::time::rfc3339(self.wall(now)),
        })));
        // A hold the caller made during the consultation reaches the new phone.
        if let Some(d) = deferred {
            self.mirror_to(now, LegId::Agent, d);
        }
        true
    }

    /// The consultation's dialog becomes the call's agent leg.
    fn take_over_leg(&mut self, now: Instant, h: Handover) {
        self.agent_call_ids.push(h.dialog.call_id.clone());
        self.agent_uri = Some(h.dialog.remote_target.clone());
        self.agent_leg = h.dialog;
        self.agent_media = LegMedia {
            local: h.local,
            pending_offer: None,
            dtmf_pt: h.dtmf_pt,
            last_sdp: h.sdp.map(|s| s.to_string().into_bytes()),
        };
        self.agent_ack = h.ack;
        self.agent_answered = true;
        if let Some(r) = h.answer {
            self.agent_session(now, &r);
        }
    }

    /// The agent left and the target did not take the caller: back into the call's queue,
    /// ahead of new callers, or hung up without one.
    fn requeue_caller(&mut self, now: Instant) {
        self.retire_agent_leg();
        let from = self.agent_id.take();
        match self.queue.as_ref().map(|q| q.0) {
            Some(queue) if self.acd_mode => {
                info!("the consulted party did not take the caller: back into the queue");
                self.transferring = true;
                self.on_hold = true;
                self.media(MediaCommand::Watch(self.media_watch()));
                self.media(MediaCommand::Play(LegId::Caller, Music::Hold));
                // The agent who left is done with it; the next agent's desktop gets its pop.
                self.publish_transferred(now, from, (None, Some(queue), None));
                self.tell_acd(AcdInput::Transfer {
                    call: self.id.clone(),
                    queue,
                    to: None,
                });
            }
            _ => {
                info!("the consulted party did not take the caller: hanging up");
                self.hang_up(now, None);
            }
        }
    }

    /// The call ends during a consultation: the target is let go.
    pub(super) fn end_consultation(&mut self, now: Instant) {
        let Some(mut c) = self.consult.take() else {
            return;
        };
        if let Some(token) = c.token.take() {
            self.reply(token, Err(ControlError::NotFound));
        }
        if let Some(mut leg) = c.leg.take() {
            leg.end(now);
            self.consults_done.push(leg);
            if let Some(b) = c.agent {
                self.tell_acd(AcdInput::Ended { call: c.key });
                self.publish_withdrawn(b, "the caller hung up");
            }
        }
        self.drive_consult(now);
    }
}
