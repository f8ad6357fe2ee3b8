//! One inbound call as a sans-IO state machine: the back-to-back user agent that owns both legs'
//! dialogs and transactions (RFC 3261 §§12–17) and their offer/answer (RFC 3264).
//!
//! The caller leg is the UAS side of the trunk's INVITE; the agent leg is the UAC side of the
//! INVITE screenpop sends to the agent's phone. Media is anchored: each leg gets screenpop's own
//! SDP, and the relay joins them.
//!
//! The machine is fed SIP messages, the ACD's decisions, media events, the results of the work it
//! asked for (the caller lookup, a DNS answer) and timer ticks, always with `now`; it answers
//! through [`Call::poll_output`] and [`Call::poll_timeout`], in the shape of `quinn-proto`'s
//! `Connection`. It never reads a clock, a socket, the store or the random generator of the
//! process: the same inputs give the same outputs, which is what lets `tests/call_sim.rs` run
//! thousands of whole calls over a lossy network on fake time. `task.rs` does the I/O.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use super::control::{Control, ControlError, Controller, TransferTo};
use super::dialog::{target_peer, Dialog, LocalContact};
use super::outbound::{challenge_answer, Gateway};
use super::pop::{self, PopCard};
use super::record::{AgentSpan, CallRecord, Disposition, EndedBy, HoldSpan, SurveyRecord};
use super::survey::{Step as SurveyStep, Survey, SurveySetup};
use crate::acd::runtime::{AgentTarget, Decision};
use crate::acd::{AgentId, CallKey, Input as AcdInput, QueueId};
use crate::config::AgentSrtp;
use crate::events::payload::{CallAnswered, CallHold, CallSurvey, CallTransferred, CallWithdrawn};
use crate::events::{Event, Payload};
use crate::ids::{ContactLogId, SipCallId};
use crate::media::g711::G711;
use crate::media::relay::{LegId, MediaEvent, RemoteMedia};
use crate::media::srtp::MasterKey;
use crate::sip::caller_id::CallerId;
use crate::sip::headers::{HeaderName, NameAddr};
use crate::sip::message::{Message, Method, Request, Response};
use crate::sip::peer::{response_peer, Peer, Transport};
use crate::sip::reliable::{self, Prack, RAck, Reliable};
use crate::sip::sdp::{
    self, Codec, Direction, LocalMedia, LocalSrtp, SessionDescription, SrtpKeys,
};
use crate::sip::session_timer::{
    negotiate_uas, Due, SessionExpires, SessionTimer, Terms, UasNegotiation, MAX_SESSION_SECS,
};
use crate::sip::transaction::{
    remains_of, ClientState, ClientTransaction, Remains, ServerKey, ServerState, ServerTransaction,
    TimerConfig, TxOutput,
};
use crate::sip::Uri;
use crate::time::{civil_date, epoch_ms};

mod attended;
pub use attended::{ConsultReady, ConsultRefused};

/// Methods screenpop accepts in a call.
pub(crate) const ALLOW: &str =
    "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK, REFER, REGISTER";

/// How long an ended call keeps absorbing retransmissions before its task goes, at most.
const LINGER: Duration = Duration::from_secs(40);

/// What every call shares and never changes while it runs.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub me: LocalContact,
    /// Address for RTP and SDP.
    pub media_ip: IpAddr,
    /// Codecs offered and accepted, in preference order.
    pub codecs: Vec<Codec>,
    pub timers: TimerConfig,
    /// How long a fixed agent target may ring (with the ACD the queue's ring timeout applies).
    pub ring_timeout: Duration,
    /// Hang up when a leg stops sending RTP for this long (`None`: never).
    pub rtp_timeout: Option<Duration>,
    /// The smallest `Session-Expires` taken, in seconds (RFC 4028 `Min-SE`; 90 by default).
    pub min_se_secs: u64,
    /// The session interval asked of agents' phones (RFC 4028 as UAC); 0 asks for none.
    pub session_expires_secs: u64,
    /// When agents' phones are offered SRTP.
    pub agent_srtp: AgentSrtp,
    /// Queued callers hear music (as early media, 183 with SDP) instead of ringback.
    pub queue_music: bool,
}

/// Everything a new call starts from; the admission checks have passed.
pub struct CallInit {
    /// screenpop's own id of the call (recording names, events, the ACD).
    pub id: CallKey,
    pub invite: Request,
    /// The INVITE's SDP offer, already parsed by [`screen`]; `None` for a delayed offer (an
    /// INVITE without SDP: our offer goes in the 2xx and the answer comes in the ACK,
    /// RFC 3261 §13.2.1, RFC 3264 §4).
    pub offer: Option<SessionDescription>,
    /// Where responses to the INVITE go (RFC 3261 §18.2.2).
    pub peer: Peer,
    /// When the INVITE came off the socket: the screen-pop latency starts here.
    pub received: Instant,
    /// The wall clock at `received`, the only one the call ever reads.
    pub wall: SystemTime,
    pub caller: CallerId,
    pub trunk: String,
    /// A fixed agent target (the trunk's `agent` setting); `None` routes through the ACD.
    pub agent: Option<AgentTarget>,
    /// The RTP ports bound for each leg.
    pub caller_port: u16,
    pub agent_port: u16,
    /// Seeds the tags, Call-IDs, CSeqs and SDP session ids this call makes up.
    pub seed: u64,
}

/// Why an INVITE is refused before a call exists, with the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: &'static str,
}

/// The checks an INVITE passes before ports are bound for it: From and To, and an SDP offer
/// that parses when there is one (`None`: a delayed offer, as Cisco CUCM and many Asterisk
/// set-ups send).
pub(crate) fn screen(
    invite: &Request,
    min_se_secs: u64,
) -> Result<Option<SessionDescription>, Refusal> {
    if invite.from().is_none() || invite.to().is_none() {
        return Err(Refusal {
            status: 400,
            why: "missing From/To",
        });
    }
    if let UasNegotiation::TooSmall { .. } = negotiate_uas(invite, min_se_secs, None) {
        return Err(Refusal {
            status: 422,
            why: "Session-Expires below Min-SE",
        });
    }
    if invite.body.is_empty() {
        return Ok(None);
    }
    SessionDescription::parse(&invite.body)
        .map(Some)
        .map_err(|e| {
            debug!(error = %e, "bad SDP");
            if e.over_limits() {
                Refusal {
                    status: 488,
                    why: "SDP over the limits",
                }
            } else {
                Refusal {
                    status: 400,
                    why: "malformed SDP",
                }
            }
        })
}

/// The final response that refuses an INVITE (with `Accept` where the body was the problem,
/// `Min-SE` where the session interval was, RFC 4028 §6).
pub(crate) fn refusal_response(
    invite: &Request,
    refusal: Refusal,
    tag: &str,
    min_se_secs: u64,
) -> Response {
    let mut r = invite.response(refusal.status, Some(tag));
    if refusal.status == 488 || refusal.status == 415 {
        r.headers.push(HeaderName::Accept, "application/sdp");
    }
    if refusal.status == 422 {
        r.headers.push(HeaderName::MinSe, min_se_secs.to_string());
    }
    r
}

/// Who the caller is in the CRM, and the contact log row written for the call: the answer to
/// [`Output::Lookup`].
#[derive(Debug, Clone, Default)]
pub struct CallerLookup {
    pub e164: Option<String>,
    pub customer_id: Option<i64>,
    pub candidates: Vec<i64>,
    pub vip: bool,
    pub assigned_agent: Option<AgentId>,
    pub card: PopCard,
    /// The contact log row, when the store could write it.
    pub log_id: Option<ContactLogId>,
}

/// What the media relay of the call is told to do.
#[derive(Debug, Clone)]
pub enum MediaCommand {
    /// Where a leg's RTP goes and in which codec.
    SetRemote(LegId, RemoteMedia),
    /// The leg's signalling address (RTP from it is accepted before the SDP says so).
    SignallingIp(LegId, IpAddr),
    /// Report a leg that stays silent this long (`None`: stop watching, e.g. on hold).
    Watch(Option<Duration>),
    /// Play music into a leg in place of the other leg's audio, round and round.
    Play(LegId, Music),
    /// The same with a clip of the call's own (a queue's music).
    PlayClip(LegId, std::sync::Arc<crate::media::player::Clip>),
    /// Play a clip into a leg once (the survey's prompt); its end is reported as
    /// [`MediaEvent::Played`].
    PlayOnce(LegId, std::sync::Arc<crate::media::player::Clip>),
    /// Stop what plays into a leg: it hears the other leg again.
    StopPlaying(LegId),
    /// Keep (`true`) or stop keeping the other leg's audio from a leg: the agent does not
    /// overhear a caller on hold.
    Hush(LegId, bool),
    /// Where the consulted party's RTP goes (an attended transfer's third leg).
    ConsultRemote(RemoteMedia),
    /// The consulted party's signalling address.
    ConsultSignallingIp(IpAddr),
    /// The consultation becomes the agent leg (the transfer is complete).
    PromoteConsult,
    /// The consultation is over without a transfer: its ports go back.
    DropConsult,
}

/// Which music: the task maps it to a file from the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Music {
    /// Music on hold.
    Hold,
    /// Music for callers waiting in a queue.
    Queue,
    /// The ringback tone an agent hears while a number screenpop dials rings.
    Ringback,
}

/// Who put the call on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldBy {
    /// The desktop or the API: we hold the agent's phone by re-INVITE.
    Desk,
    /// The agent's phone (its hold button): it re-INVITEd us.
    Phone,
}

impl HoldBy {
    fn as_str(self) -> &'static str {
        match self {
            HoldBy::Desk => "desk",
            HoldBy::Phone => "phone",
        }
    }
}

/// The caller hears music while the agent is away.
#[derive(Debug, Clone, Copy)]
struct Hold {
    by: HoldBy,
    since: Instant,
}

/// What the call asks its task to do, in order.
#[derive(Debug)]
pub enum Output {
    /// Send SIP bytes.
    Transmit {
        peer: Peer,
        bytes: Vec<u8>,
    },
    /// An event for the desktops.
    Publish(Event),
    /// Match the caller to customers and write the contact log row; answer with
    /// [`Call::handle_lookup`]. Asked once, first.
    Lookup {
        caller: CallerId,
        sip_call_id: SipCallId,
        dialed: String,
        offered_at_ms: u64,
    },
    /// Ask the ACD for an agent; its decisions come back through [`Call::handle_decision`].
    Route {
        dialed: String,
        vip: bool,
        assigned: Option<AgentId>,
    },
    /// Tell the ACD what happened to the call.
    Acd(AcdInput),
    /// Messages with this (agent-leg) Call-ID belong to this call from now on.
    Listen {
        call_id: String,
    },
    /// Resolve the agent's host name; answer with [`Call::handle_resolved`].
    Resolve {
        attempt: u32,
        host: String,
        port: u16,
    },
    /// The contact log names the agent being rung or who answered.
    NoteAgent {
        log_id: ContactLogId,
        agent: AgentId,
        queue: Option<QueueId>,
    },
    Media(MediaCommand),
    /// The call was answered: write the provisional record beside the recording, then start
    /// recording (`answered` is the recording's time zero).
    Record {
        record: Box<CallRecord>,
        date: (i32, u32, u32),
        answered: Instant,
    },
    /// The call is over: stop the media, finish the recording and the contact log from this
    /// record; `at` is where the recording ends. Exactly once per call.
    Ended {
        record: Box<CallRecord>,
        at: Instant,
    },
    /// The answer to the control request `token` ([`Call::handle_control`]).
    Reply {
        token: u64,
        result: Result<(), ControlError>,
    },
    /// The agent's phone asks to transfer the call (REFER) to this URI: find the agent or
    /// queue it names and answer with [`Call::handle_refer`].
    Refer {
        target: Uri,
    },
    /// An attended transfer's consultation: reserve the target in the ACD under `key` (not
    /// `exclude`, the agent asking), resolve it, bind ports for the third leg and hand them to
    /// the media engine; answer with [`Call::handle_consult`].
    Consult {
        key: CallKey,
        to: TransferTo,
        exclude: Option<AgentId>,
    },
}

/// Why a phone's REFER target is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferRefused {
    /// Neither an agent nor a queue's number.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Agent leg INVITE sent (or an agent awaited), caller hears ringback.
    Ringing,
    /// Both legs answered.
    Up,
    /// Over: only retransmissions are absorbed until the transactions end.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    AgentInvite,
    ReInvite,
    /// Our session refresh to the caller (RFC 4028 §7.4): a re-INVITE with the same SDP.
    Refresh,
    Bye,
    Cancel,
    /// The progress of a REFER (RFC 3515 §2.4.4).
    Notify,
}

struct Client {
    tx: ClientTransaction,
    peer: Peer,
    leg: LegId,
    purpose: Purpose,
    /// Which agent-leg attempt this belongs to (each agent rung is a new attempt).
    attempt: u32,
    /// A provisional response arrived (a CANCEL may be sent, RFC 3261 §9.1).
    provisional: bool,
    /// Cancel as soon as a provisional response arrives.
    cancel_pending: bool,
}

/// A server transaction of the call's, with whom it is with and on which leg. Shared with
/// placed calls ([`super::outbound`]).
pub(super) struct Server {
    pub(super) tx: ServerTransaction,
    pub(super) peer: Peer,
    pub(super) leg: LegId,
}

/// A leg's media negotiation state.
struct LegMedia {
    local: LocalMedia,
    /// The last offer we sent on this leg and await an answer to.
    pending_offer: Option<SessionDescription>,
    dtmf_pt: Option<u8>,
    /// Our last answer or accepted offer body, repeated on retransmitted 2xx.
    last_sdp: Option<Vec<u8>>,
}

/// Where the caller lookup stands: the call cannot finish its contact log before it is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Pending,
    Done,
}

/// One call. See the module documentation.
pub struct Call {
    cfg: std::sync::Arc<CallConfig>,
    id: CallKey,
    rng: StdRng,
    phase: Phase,
    /// The caller leg's dialog.
    caller_leg: Dialog,
    /// The agent leg's dialog (a placeholder until an agent is rung).
    agent_leg: Dialog,
    invite: Request,
    invite_key: ServerKey,
    caller: CallerId,
    trunk: String,
    agent_uri: Option<Uri>,
    codec: Codec,
    caller_media: LegMedia,
    agent_media: LegMedia,
    servers: Vec<Server>,
    clients: Vec<Client>,
    agent_answered: bool,
    agent_ack: Option<Vec<u8>>,
    /// The current agent-leg attempt; earlier attempts' dialogs are kept to release a late 2xx.
    attempt: u32,
    old_agent_legs: Vec<(u32, Dialog)>,
    /// Every agent-leg Call-ID this call used.
    agent_call_ids: Vec<String>,
    /// Routed by the ACD (no fixed agent target).
    acd_mode: bool,
    /// The ACD has heard of the call (it must hear how it ends).
    routed: bool,
    /// The agent (store id) ringing or bridged, and the queue the call waits in.
    agent_id: Option<AgentId>,
    queue: Option<(QueueId, String)>,
    lookup: Lookup,
    found: CallerLookup,
    /// When the INVITE came off the socket, and the wall clock then.
    received: Instant,
    wall0: SystemTime,
    ring_deadline: Option<Instant>,
    linger_until: Option<Instant>,
    answered_at: Option<Instant>,
    ended_at: Option<Instant>,
    ended_by: Option<LegId>,
    /// The end's record waits for the caller lookup (the contact log row it completes).
    end_reported: bool,
    disposition: Option<Disposition>,
    final_status: u16,
    dialed: String,
    agent_needs_dns: bool,
    /// A leg offered sendonly/recvonly/inactive: silence is expected.
    on_hold: bool,
    /// The call was ended because a leg stopped sending RTP.
    rtp_timeout: bool,
    /// The caller ACKed our 2xx.
    caller_acked: bool,
    /// The call ended before the caller ACKed our 2xx: its BYE waits for the ACK or for the
    /// 2xx's retransmissions to give up (RFC 3261 §15: no BYE before either).
    caller_bye_deferred: bool,
    /// The trunk INVITE's Max-Forwards; the agent leg gets one less, so a target that
    /// points back at screenpop ends instead of looping.
    max_forwards: u32,
    /// The INVITE came without SDP: the agent leg is offered every codec we take, its answer
    /// picks the call's codec, and our 2xx to the caller carries the offer.
    delayed_offer: bool,
    /// Each leg's session timer terms (caller, agent) and its timer: the caller's from its
    /// INVITE, started by our 2xx; the agent's from its phone's 2xx to our INVITE.
    session_terms: [Option<Terms>; 2],
    session: [Option<SessionTimer>; 2],
    /// Ended because a leg's refreshes stopped (or its refresh was refused as gone).
    session_expired: bool,
    /// The phone being rung refused our SRTP offer (488): it is offered plain RTP instead.
    agent_plain_only: bool,
    /// The phone being rung answered 422 with this Min-SE: it is asked again with it.
    agent_min_se: Option<u64>,
    /// The caller asked for reliable provisionals (RFC 3262): our 18x wait for its PRACKs.
    reliable: Option<Reliable>,
    /// Our 2xx to the caller, held until the PRACK of a provisional that carried SDP.
    held_2xx: Option<Response>,
    /// Our media direction on each leg (caller, agent): what we last answered or offered
    /// there. A hold or resume already in place is not mirrored again, and our refresh
    /// repeats it.
    local_dir: [Direction; 2],
    /// The peer on each leg holds (it offered other than sendrecv): silence is expected.
    held: [bool; 2],
    /// A mirrored re-INVITE on that leg is unanswered: the direction before it, restored if
    /// it fails.
    mirror_inflight: [Option<Direction>; 2],
    /// A hold or resume to mirror to that leg once its INVITE in progress (or, for the caller,
    /// the ACK of our 2xx) is done: two INVITEs never overlap on a dialog (RFC 3261 §14.1).
    mirror_deferred: [Option<Direction>; 2],
    /// Our 2xx to a delayed offer carried our offer: the caller's ACK must answer it.
    ack_answer_awaited: bool,
    /// On hold: music plays to the caller.
    hold: Option<Hold>,
    /// Holds that are over, for the record.
    holds: Vec<HoldSpan>,
    /// A hold or resume from the desktop waiting for the agent phone's answer to our
    /// re-INVITE: its token.
    control_pending: Option<(u64, Control)>,
    /// Queue music plays to the caller (early media) until an agent answers.
    queue_music_on: bool,
    /// Hung up from the desktop or the API.
    hung_up_from_desk: bool,
    /// The queue's CRM link template, filled in for each `call.offered`.
    crm_template: Option<String>,
    /// A blind transfer in progress: the caller hears music until the ACD's next agent
    /// answers.
    transferring: bool,
    /// Every agent who had the call: (agent, answered, left), for the record.
    agents_had: Vec<(AgentId, Instant, Option<Instant>)>,
    /// A REFER from the agent's phone waiting for its target to be looked up: the NOTIFY that
    /// ends its implicit subscription goes out before the phone's leg is hung up.
    refer_pending: bool,
    /// The CSeq of the REFER being reported on: its NOTIFYs say `Event: refer;id=N`
    /// (RFC 3515 §2.4.6), so a second REFER in the dialog is told apart from the first.
    refer_id: u32,
    /// A transfer out through the gateway: the agent leg rings this number, answering the
    /// gateway's challenge with `agent_auth` (counted in `gateway_tries`).
    number_target: Option<Box<Gateway>>,
    gateway_tries: u32,
    agent_auth: Option<(HeaderName, String)>,
    /// An attended transfer in progress (see `attended.rs`).
    consult: Option<attended::Consulting>,
    /// Consultation legs that are over and finish their transactions.
    consults_done: Vec<crate::calls::consult::ConsultLeg>,
    /// What consultation legs gone before the call's end left (an ACK to repeat until Timer
    /// D): handed to the dispatcher with the call's own.
    consult_remains: Vec<(Remains, Peer)>,
    /// Every consultation's Call-ID, and how many consultations there were.
    consult_call_ids: Vec<String>,
    consults: u32,
    /// The queue's post-call survey, and the survey once the agent hung up first.
    survey_setup: Option<std::sync::Arc<SurveySetup>>,
    survey: Option<Survey>,
    out: VecDeque<Output>,
}

/// Our later offers on a leg propose the suite its SRTP was negotiated with.
fn keep_suite(local: &mut LocalMedia, settled: Option<SrtpKeys>) {
    if let (Some(l), Some(k)) = (local.srtp.as_mut(), settled) {
        l.suite = k.suite;
    }
}

fn remote_media(
    rtp: Option<SocketAddr>,
    codec: Codec,
    dtmf_pt: Option<u8>,
    srtp: Option<SrtpKeys>,
) -> RemoteMedia {
    RemoteMedia {
        srtp,
        rtp,
        codec: match codec {
            Codec::Pcmu => G711::Pcmu,
            Codec::Pcma => G711::Pcma,
        },
        dtmf_pt,
    }
}

impl Call {
    /// Takes the INVITE: answers 100 Trying, asks for the caller lookup and tells the relay
    /// where the caller's audio goes. Refused (488) when no codec is shared.
    pub fn new(cfg: std::sync::Arc<CallConfig>, init: CallInit) -> Result<Call, Refusal> {
        let mut rng = StdRng::seed_from_u64(init.seed);
        let now = init.received;
        let mut caller_local = LocalMedia {
            addr: cfg.media_ip,
            port: init.caller_port,
            session_id: rng.gen::<u32>() as u64,
            session_version: 1,
            username: "screenpop".into(),
            // Our key, should the trunk offer SRTP: it gets SRTP back (RFC 4568). Keys come
            // from the OS-seeded generator, never from the call's seeded one (whose output
            // shows on the wire as tags).
            srtp: init
                .offer
                .as_ref()
                .filter(|o| sdp::offers_srtp(o))
                .map(|_| LocalSrtp::new(MasterKey::generate())),
        };
        let negotiated = match &init.offer {
            Some(offer) => Some(sdp::answer(offer, &caller_local, &cfg.codecs).map_err(|e| {
                debug!(error = %e, "offer not acceptable");
                Refusal {
                    status: 488,
                    why: "no usable audio stream or codec",
                }
            })?),
            None => None,
        };
        caller_local.session_version = 1;
        let invite = init.invite;
        let session_terms = match negotiate_uas(&invite, cfg.min_se_secs, None) {
            UasNegotiation::Timed(terms) => Some(terms),
            _ => None,
        };
        let reliable = reliable::requested(&invite).then(|| {
            let cseq = invite.cseq().map_or(1, |c| c.seq);
            Reliable::new(cfg.timers.t1, cseq, rng.gen_range(1..1 << 30))
        });
        let (Some(from), Some(to), Some(invite_key)) =
            (invite.from(), invite.to(), ServerKey::of(&invite))
        else {
            return Err(Refusal {
                status: 400,
                why: "missing From/To",
            });
        };
        let local_tag = new_tag(&mut rng);
        let mut local_to = to.clone();
        local_to.set_param("tag", Some(&local_tag));
        let caller_leg = Dialog {
            call_id: invite.call_id().unwrap_or_default().to_string(),
            local: local_to,
            remote: from.clone(),
            remote_target: invite
                .contact()
                .map(|c| c.uri)
                .unwrap_or_else(|| from.uri.clone()),
            route_set: invite
                .headers
                .get_all(&HeaderName::RecordRoute)
                .map(str::to_string)
                .collect(),
            local_cseq: rng.gen::<u16>() as u32,
            remote_cseq: invite.cseq().map(|c| c.seq),
            peer: init.peer,
            secure: invite.uri.scheme == "sips" && init.peer.transport == Transport::Tls,
        };
        // With the ACD the agent leg is set up when an agent is offered the call; until then it
        // is a placeholder aimed at ourselves that is never used.
        let acd_mode = init.agent.is_none();
        let agent = init.agent.clone().unwrap_or_else(|| AgentTarget {
            uri: Uri::sip(None, &cfg.me.host, Some(cfg.me.port)),
            peer: Some(init.peer),
        });
        let (agent_leg, agent_needs_dns) =
            agent_dialog(&cfg.me, &mut rng, &init.caller, &agent, init.peer);
        let agent_local = LocalMedia {
            addr: cfg.media_ip,
            port: init.agent_port,
            session_id: rng.gen::<u32>() as u64,
            session_version: 1,
            username: "screenpop".into(),
            srtp: None,
        };
        let server = ServerTransaction::new(
            invite.clone(),
            invite_key.clone(),
            init.peer.transport.reliable(),
            cfg.timers,
        );
        // With a delayed offer the agent's answer picks the codec; until then, our first.
        let codec = negotiated
            .as_ref()
            .map(|n| n.codec)
            .or(cfg.codecs.first().copied())
            .unwrap_or(Codec::Pcmu);
        let mut call = Call {
            id: init.id,
            rng,
            phase: Phase::Ringing,
            agent_call_ids: if acd_mode {
                Vec::new()
            } else {
                vec![agent_leg.call_id.clone()]
            },
            caller_leg,
            agent_leg,
            dialed: invite.uri.user_unescaped().unwrap_or_default(),
            max_forwards: invite
                .headers
                .get(&HeaderName::MaxForwards)
                .and_then(|m| m.trim().parse::<u32>().ok())
                .unwrap_or(70),
            invite,
            invite_key,
            caller: init.caller,
            trunk: init.trunk,
            agent_uri: (!acd_mode).then_some(agent.uri),
            codec,
            delayed_offer: negotiated.is_none(),
            session_terms: [session_terms, None],
            session: [None, None],
            session_expired: false,
            reliable,
            held_2xx: None,
            agent_plain_only: false,
            agent_min_se: None,
            local_dir: [Direction::SendRecv; 2],
            held: [false; 2],
            mirror_inflight: [None; 2],
            mirror_deferred: [None; 2],
            ack_answer_awaited: false,
            hold: None,
            holds: Vec::new(),
            control_pending: None,
            queue_music_on: false,
            hung_up_from_desk: false,
            crm_template: None,
            transferring: false,
            agents_had: Vec::new(),
            refer_pending: false,
            refer_id: 0,
            number_target: None,
            gateway_tries: 0,
            agent_auth: None,
            consult: None,
            consults_done: Vec::new(),
            consult_remains: Vec::new(),
            consult_call_ids: Vec::new(),
            consults: 0,
            survey_setup: None,
            survey: None,
            caller_media: LegMedia {
                local: caller_local,
                pending_offer: None,
                // Ours is offered in the 2xx of a delayed offer.
                dtmf_pt: negotiated.as_ref().map_or(Some(101), |n| n.dtmf_pt),
                last_sdp: negotiated
                    .as_ref()
                    .map(|n| n.answer.to_string().into_bytes()),
            },
            agent_media: LegMedia {
                local: agent_local,
                pending_offer: None,
                // Always offered: screenpop terminates the agent's media, so a key pressed on
                // the phone is kept with the call even when the trunk takes no events.
                dtmf_pt: Some(101),
                last_sdp: None,
            },
            servers: vec![Server {
                tx: server,
                peer: init.peer,
                leg: LegId::Caller,
            }],
            clients: Vec::new(),
            agent_answered: false,
            agent_ack: None,
            attempt: 0,
            old_agent_legs: Vec::new(),
            acd_mode,
            routed: false,
            agent_id: None,
            queue: None,
            lookup: Lookup::Pending,
            found: CallerLookup::default(),
            received: now,
            wall0: init.wall,
            ring_deadline: None,
            linger_until: None,
            answered_at: None,
            ended_at: None,
            ended_by: None,
            end_reported: false,
            disposition: None,
            final_status: 0,
            agent_needs_dns,
            on_hold: false,
            rtp_timeout: false,
            caller_acked: false,
            caller_bye_deferred: false,
            out: VecDeque::new(),
            cfg,
        };
        if let Some(n) = &negotiated {
            keep_suite(&mut call.caller_media.local, n.srtp);
            call.media(MediaCommand::SetRemote(
                LegId::Caller,
                remote_media(n.remote_rtp, codec, n.dtmf_pt, n.srtp),
            ));
        }
        call.media(MediaCommand::SignallingIp(
            LegId::Caller,
            call.caller_leg.peer.addr.ip(),
        ));
        // 100 Trying at once (RFC 3261 §8.2.6.1), then who the caller is.
        let trying = call.invite.response(100, None);
        call.respond_invite(now, trying);
        call.out.push_back(Output::Lookup {
            caller: call.caller.clone(),
            sip_call_id: SipCallId::new(call.caller_leg.call_id.clone()),
            dialed: call.dialed.clone(),
            offered_at_ms: epoch_ms(call.wall0),
        });
        call.pump(now);
        Ok(call)
    }

    /// screenpop's id of the call.
    pub fn id(&self) -> &CallKey {
        &self.id
    }

    /// The SIP Call-IDs the call answers to (the caller leg's first).
    pub fn call_ids(&self) -> Vec<String> {
        let mut ids = vec![self.caller_leg.call_id.clone()];
        ids.extend(self.agent_call_ids.iter().cloned());
        ids.extend(self.consult_call_ids.iter().cloned());
        ids
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Call::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let txs = self
            .servers
            .iter()
            .filter_map(|s| s.tx.poll_timeout())
            .chain(self.clients.iter().filter_map(|c| c.tx.poll_timeout()));
        let session = self
            .session
            .iter()
            .flatten()
            .filter(|_| self.phase == Phase::Up)
            .map(SessionTimer::deadline);
        let survey = self
            .survey
            .as_ref()
            .filter(|_| self.phase == Phase::Up)
            .and_then(Survey::deadline);
        txs.chain(self.ring_deadline)
            .chain(survey)
            .chain(self.consult_deadline())
            .chain(self.linger_until)
            .chain(self.reliable.as_ref().and_then(Reliable::poll_timeout))
            .chain(session)
            .min()
    }

    /// The call is over and nothing of it is left to absorb: its task may go.
    /// Ended, and nothing sent waits for an answer (each BYE or CANCEL answered, each error
    /// response to an INVITE acknowledged): a shutdown may exit.
    pub fn settled(&self) -> bool {
        self.phase == Phase::Ended
            && !self.caller_ack_awaited()
            && self.clients.iter().all(|c| !c.tx.awaits_final())
            && self.servers.iter().all(|s| !s.tx.awaits_ack())
            && self.consults_done.iter().all(|c| c.settled())
    }

    /// The call is over and all that is left of it is what [`Call::remains`] hands on: its task
    /// may go. (A call of a few seconds was kept 32 s by its BYE's Timer J, with all its
    /// state: 500 set-ups a second held 16,000 ended calls, half a gigabyte.)
    pub fn is_done(&self, now: Instant) -> bool {
        self.phase == Phase::Ended
            && self.end_reported
            // Over TCP the INVITE's transaction cannot tell whether our 2xx was acknowledged;
            // the call knows (a BYE may wait for that ACK).
            && ((!self.caller_ack_awaited()
                && self.servers.iter().all(|s| s.tx.remains().is_some())
                && self.clients.iter().all(|c| c.tx.remains().is_some())
                && self.consults_done.iter().all(|c| c.finished(now)))
                || self.linger_until.is_some_and(|l| now >= l))
    }

    /// What the dispatcher keeps of the call once its task has gone ([`remains_of`]), its
    /// ended consultations' included.
    pub fn remains(&self) -> Vec<(Remains, Peer)> {
        let mut r = remains_of(
            self.servers.iter().map(|s| (&s.tx, s.peer)),
            self.clients.iter().map(|c| (&c.tx, c.peer)),
        );
        r.extend(
            self.consults_done
                .iter()
                .flat_map(crate::calls::consult::ConsultLeg::remains),
        );
        r.extend(self.consult_remains.iter().cloned());
        r
    }

    /// The wall clock at `now`, from the one reading taken when the INVITE arrived.
    fn wall(&self, now: Instant) -> SystemTime {
        self.wall0 + now.saturating_duration_since(self.received)
    }

    fn media(&mut self, cmd: MediaCommand) {
        self.out.push_back(Output::Media(cmd));
    }

    fn send(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Transmit { peer, bytes });
    }

    fn publish(&mut self, event: Event) {
        self.out.push_back(Output::Publish(event));
    }

    fn tell_acd(&mut self, input: AcdInput) {
        self.out.push_back(Output::Acd(input));
    }

    /// The caller lookup is back: the call is routed (or its fixed agent rung).
    pub fn handle_lookup(&mut self, now: Instant, found: CallerLookup) {
        if self.lookup == Lookup::Done {
            return;
        }
        self.lookup = Lookup::Done;
        self.found = found;
        if self.phase == Phase::Ended {
            // The caller left while the lookup ran: complete its contact log now.
            self.report_end();
        } else if self.acd_mode {
            // The caller hears ringback while waiting for an agent (RFC 3261 §21.1.2), or the
            // queue's music as early media: a 183 with our answer (RFC 3960 §2). A delayed
            // offer has no answer to put there, so it keeps ringback.
            let tag = self.caller_leg.local_tag().to_string();
            let music = self
                .caller_media
                .last_sdp
                .clone()
                .filter(|_| self.cfg.queue_music && !self.delayed_offer);
            let mut ringing = self
                .invite
                .response(if music.is_some() { 183 } else { 180 }, Some(&tag));
            ringing
                .headers
                .push(HeaderName::Contact, self.caller_leg.contact(&self.cfg.me));
            if let Some(body) = music {
                ringing = ringing.with_body("application/sdp", body);
                self.queue_music_on = true;
                self.media(MediaCommand::Play(LegId::Caller, Music::Queue));
            }
            self.respond_invite(now, ringing);
            if self.max_forwards == 0 {
                self.disposition = Some(Disposition::Failed);
                self.fail_caller(now, 483);
                self.end(now, None);
            } else {
                self.routed = true;
                self.out.push_back(Output::Route {
                    dialed: self.dialed.clone(),
                    vip: self.found.vip,
                    assigned: self.found.assigned_agent,
                });
            }
        } else if self.agent_needs_dns {
            self.resolve(0);
        } else {
            self.ring_fixed_agent(now);
        }
        self.pump(now);
    }

    fn resolve(&mut self, attempt: u32) {
        let (host, port) = self.agent_leg.remote_target.host_port();
        self.out.push_back(Output::Resolve {
            attempt,
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        });
    }

    /// The agent's host name resolved (to an address of the SIP socket's family), or not.
    pub fn handle_resolved(&mut self, now: Instant, attempt: u32, addr: Option<SocketAddr>) {
        if attempt != self.attempt || !(self.phase == Phase::Ringing || self.transferring) {
            return;
        }
        if self.acd_mode {
            let Some(agent) = self.agent_id else { return };
            match addr {
                Some(addr) => {
                    self.agent_leg.peer.addr = addr;
                    self.ring_offered_agent(now, agent);
                }
                None => {
                    self.agent_id = None;
                    self.tell_acd(AcdInput::Refused {
                        call: self.id.clone(),
                        agent,
                    });
                }
            }
        } else {
            match addr {
                Some(addr) => {
                    self.agent_leg.peer.addr = addr;
                    self.ring_fixed_agent(now);
                }
                None => {
                    self.disposition = Some(Disposition::Failed);
                    self.fail_caller(now, 480);
                    self.end(now, None);
                }
            }
        }
        self.pump(now);
    }

    fn ring_fixed_agent(&mut self, now: Instant) {
        if self.max_forwards == 0 {
            self.disposition = Some(Disposition::Failed);
            self.fail_caller(now, 483);
            self.end(now, None);
            return;
        }
        self.media(MediaCommand::SignallingIp(
            LegId::Agent,
            self.agent_leg.peer.addr.ip(),
        ));
        self.ring_deadline = Some(now + self.cfg.ring_timeout);
        self.start_agent_leg(now);
    }

    fn ring_offered_agent(&mut self, now: Instant, agent: AgentId) {
        self.media(MediaCommand::SignallingIp(
            LegId::Agent,
            self.agent_leg.peer.addr.ip(),
        ));
        self.start_agent_leg(now);
        self.publish_offered();
        self.note_agent(agent);
    }

    /// Acts on the ACD's word: the queue, an agent to ring, a withdrawn offer, an overflow.
    pub fn handle_decision(&mut self, now: Instant, d: Decision) {
        self.on_decision(now, d);
        self.pump(now);
    }

    fn on_decision(&mut self, now: Instant, d: Decision) {
        match d {
            Decision::Queued {
                queue,
                name,
                crm_url,
                music,
                survey,
            } => {
                // The queue goes into the contact log at the answer and at hang-up.
                info!(queue = %name, "queued");
                if self.phase == Phase::Ended {
                    // The caller left before the ACD's word arrived: nobody waits.
                    return;
                }
                let event = pop::queued(
                    &self.id,
                    queue,
                    &name,
                    &self.caller,
                    self.found.e164.as_deref(),
                    self.wall(now),
                );
                self.publish(event);
                self.queue = Some((queue, name));
                self.crm_template = crm_url;
                self.survey_setup = survey;
                if let Some(clip) = music {
                    self.queue_clip(now, clip);
                }
            }
            Decision::NoQueue | Decision::Overflow => {
                if matches!(d, Decision::NoQueue) {
                    info!(dialed = %self.dialed, "no queue for this number and no default queue");
                } else {
                    info!("nobody answered within the queue's maximum wait");
                }
                if self.phase == Phase::Ringing {
                    self.cancel_agent(now);
                    self.disposition = Some(Disposition::Missed);
                    self.fail_caller(now, 480);
                    self.end(now, None);
                } else if self.transferring {
                    // Nobody took the transferred caller within the queue's maximum wait.
                    self.cancel_agent(now);
                    self.hang_up(now, None);
                }
            }
            Decision::Withdraw { agent } => {
                if self.agent_answered || self.agent_id != Some(agent) {
                    // The agent answered first, or its offer already ended (refused).
                    return;
                }
                info!(agent, "ring-no-answer: offer withdrawn");
                self.cancel_agent(now);
                self.withdrawn(agent, "no_answer");
            }
            Decision::Offer(offer) => {
                if !(self.phase == Phase::Ringing || self.transferring) || self.agent_answered {
                    // Answered or gone meanwhile; the ACD frees the agent when it hears so.
                    return;
                }
                // Never two phones ringing for one call.
                self.cancel_agent(now);
                let (leg, needs_dns) = agent_dialog(
                    &self.cfg.me,
                    &mut self.rng,
                    &self.caller,
                    &offer.target,
                    self.caller_leg.peer,
                );
                let old = std::mem::replace(&mut self.agent_leg, leg);
                if self.attempt > 0 {
                    self.old_agent_legs.push((self.attempt, old));
                }
                self.attempt += 1;
                self.agent_plain_only = false;
                self.agent_min_se = None;
                self.agent_answered = false;
                self.agent_ack = None;
                self.agent_media.pending_offer = None;
                self.agent_call_ids.push(self.agent_leg.call_id.clone());
                self.out.push_back(Output::Listen {
                    call_id: self.agent_leg.call_id.clone(),
                });
                self.agent_id = Some(offer.agent);
                self.agent_uri = Some(offer.target.uri.clone());
                info!(agent = offer.agent, name = %offer.display_name, "offered");
                if needs_dns {
                    self.resolve(self.attempt);
                } else {
                    self.ring_offered_agent(now, offer.agent);
                }
            }
        }
    }

    /// The queue has music of its own: the caller hears it (as early media) in place of the
    /// profile's music or of ringback. A delayed offer has no answer for a 183: ringback stays.
    fn queue_clip(&mut self, now: Instant, clip: std::sync::Arc<crate::media::player::Clip>) {
        if self.phase != Phase::Ringing || !self.invite_pending() || self.delayed_offer {
            return;
        }
        if !self.queue_music_on {
            let Some(body) = self.caller_media.last_sdp.clone() else {
                return;
            };
            let tag = self.caller_leg.local_tag().to_string();
            let mut early = self.invite.response(183, Some(&tag));
            early
                .headers
                .push(HeaderName::Contact, self.caller_leg.contact(&self.cfg.me));
            self.respond_invite(now, early.with_body("application/sdp", body));
            self.queue_music_on = true;
        }
        self.media(MediaCommand::PlayClip(LegId::Caller, clip));
    }

    /// The contact log names the agent being rung, and then the one who answered, so that
    /// agent may work on the call from the pop at once (pick the customer, write notes).
    fn note_agent(&mut self, agent: AgentId) {
        if let Some(log_id) = self.found.log_id {
            self.out.push_back(Output::NoteAgent {
                log_id,
                agent,
                queue: self.queue.as_ref().map(|q| q.0),
            });
        }
    }

    /// The screen-pop, to the agent being rung (and supervisors).
    fn publish_offered(&mut self) {
        // After a blind transfer the card says who handed the caller over.
        let from = self
            .agents_had
            .last()
            .map(|a| a.0)
            .filter(|_| self.transferring);
        let event = self.offered_event(self.agent_id, self.received, from);
        self.publish(event);
    }

    /// The screen-pop for `agent`'s desktop: the customer card, the queue's CRM link; its
    /// latency is measured from `since`.
    fn offered_event(
        &self,
        agent: Option<AgentId>,
        since: Instant,
        from: Option<AgentId>,
    ) -> Event {
        pop::offered(pop::Offered {
            call_id: &self.id,
            log_id: self.found.log_id,
            queue: self.queue.as_ref().map(|q| q.1.as_str()),
            queue_id: self.queue.as_ref().map(|q| q.0),
            agent_id: agent,
            caller: &self.caller,
            caller_e164: self.found.e164.as_deref(),
            dialed: &self.dialed,
            card: &self.found.card,
            offered_at: self.wall0,
            since,
            outbound: false,
            from_agent_id: from,
            crm_url: self.crm_template.as_deref().map(|t| {
                crate::crm::link::fill(
                    t,
                    &crate::crm::link::LinkFields {
                        e164: self.found.e164.as_deref(),
                        number: self.caller.number.as_deref(),
                        call_id: self.id.as_str(),
                        contact_log_id: self.found.log_id.map(|l| l.get()),
                        customer_id: self.found.customer_id,
                        dialed: &self.dialed,
                    },
                )
            }),
        })
    }

    /// The agent's desktop drops the pop: the offer went elsewhere.
    fn withdrawn(&mut self, agent: AgentId, reason: &str) {
        self.publish(Event::new(Payload::CallWithdrawn(CallWithdrawn {
            call_id: self.id.clone(),
            agent_id: agent,
            reason: reason.to_string(),
        })));
        self.agent_id = None;
        // Responses to the withdrawn INVITE belong to an old attempt from now on.
        self.shelve_agent_leg();
    }

    /// The agent leg's dialog is done with: its late messages (a crossing BYE, a retransmitted
    /// 2xx, a 2xx crossing our CANCEL) find a stale leg, and the next phone gets a new attempt.
    fn shelve_agent_leg(&mut self) {
        let fresh = Dialog {
            call_id: String::new(),
            ..self.agent_leg.clone()
        };
        let old = std::mem::replace(&mut self.agent_leg, fresh);
        self.old_agent_legs.push((self.attempt, old));
        self.attempt += 1;
    }

    /// The same, and the next agent leg starts afresh: its own offer, session timer and
    /// direction.
    fn retire_agent_leg(&mut self) {
        self.shelve_agent_leg();
        self.agent_media.pending_offer = None;
        let a = LegId::Agent.index();
        self.session[a] = None;
        self.session_terms[a] = None;
        self.local_dir[a] = Direction::SendRecv;
        self.held[a] = false;
        self.mirror_inflight[a] = None;
        self.mirror_deferred[a] = None;
    }

    /// Our Contact on `leg`.
    fn leg_contact(&self, leg: LegId) -> String {
        match leg {
            LegId::Caller => self.caller_leg.contact(&self.cfg.me),
            LegId::Agent => self.agent_leg.contact(&self.cfg.me),
        }
    }

    fn dialog(&mut self, leg: LegId) -> &mut Dialog {
        match leg {
            LegId::Caller => &mut self.caller_leg,
            LegId::Agent => &mut self.agent_leg,
        }
    }

    fn leg_media(&mut self, leg: LegId) -> &mut LegMedia {
        match leg {
            LegId::Caller => &mut self.caller_media,
            LegId::Agent => &mut self.agent_media,
        }
    }

    fn start_agent_leg(&mut self, now: Instant) {
        let me = self.cfg.me.clone();
        let mut inv = self.agent_leg.request(Method::Invite, &me, None);
        inv.headers.set(
            HeaderName::MaxForwards,
            self.max_forwards.saturating_sub(1).min(70).to_string(),
        );
        let codecs = if self.delayed_offer && self.phase == Phase::Ringing {
            self.cfg.codecs.clone()
        } else {
            vec![self.codec]
        };
        // SDES keys travel in the SDP: SRTP is offered where the signalling is encrypted (or
        // wherever the profile says), with a fresh key for each phone rung.
        let transport = self.agent_leg.peer.transport;
        self.agent_media.local.srtp = self
            .cfg
            .agent_srtp
            .offers(transport)
            .then(|| LocalSrtp::new(MasterKey::generate()))
            .filter(|_| !self.agent_plain_only);
        let offer = sdp::offer(
            &self.agent_media.local,
            &codecs,
            self.agent_media.dtmf_pt,
            Direction::SendRecv,
        );
        inv.headers.push(HeaderName::Allow, ALLOW);
        if self.cfg.session_expires_secs > 0 {
            // The phone picks the refresher (RFC 4028 §9); a dead phone is found by it.
            inv.headers.push(HeaderName::Supported, "timer");
            // After a 422 the phone's Min-SE is the floor (RFC 4028 §7.4).
            let min_se = self.cfg.min_se_secs.max(self.agent_min_se.unwrap_or(0));
            inv.headers.push(
                HeaderName::SessionExpires,
                self.cfg.session_expires_secs.max(min_se).to_string(),
            );
            inv.headers.push(HeaderName::MinSe, min_se.to_string());
        }
        let presented = match &self.number_target {
            Some(gw) => Some(&gw.caller_id),
            None => self.caller.number.as_ref(),
        };
        if let Some(n) = presented {
            inv.headers.push(
                HeaderName::PAssertedIdentity,
                format!("<sip:{n}@{}>", me.host),
            );
        }
        if let Some((name, value)) = self.agent_auth.take() {
            inv.headers.push(name, value);
        }
        inv.headers.push(
            HeaderName::Other("X-Screenpop-Call".into()),
            self.id.to_string(),
        );
        inv.headers.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.to_string().into_bytes();
        self.agent_media.pending_offer = Some(offer);
        info!(agent = %inv.uri, peer = %self.agent_leg.peer.addr, "ringing agent");
        self.send_client(now, inv, LegId::Agent, Purpose::AgentInvite);
    }

    fn send_client(&mut self, now: Instant, req: Request, leg: LegId, purpose: Purpose) {
        let peer = self.leg_peer(leg);
        let tx = ClientTransaction::new(now, req, peer.transport.reliable(), self.cfg.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg,
            purpose,
            attempt: self.attempt,
            provisional: false,
            cancel_pending: false,
        });
    }

    /// Where a leg's in-dialog requests go: the first hop of its route set, else its remote
    /// target (caller leg) or the agent phone's known address (agent leg).
    fn leg_peer(&self, leg: LegId) -> Peer {
        let d = match leg {
            LegId::Caller => &self.caller_leg,
            LegId::Agent => &self.agent_leg,
        };
        if leg == LegId::Agent && d.route_set.is_empty() {
            return d.peer;
        }
        let target = target_peer(&d.next_hop(), d.peer);
        // A dialog that came in over TLS is answered over that connection when its target is
        // the same host: a trunk rarely accepts TLS it did not open, and its certificate
        // seldom names its IP (RFC 5923 reuses connections by alias for the same reason).
        if d.peer.transport == Transport::Tls
            && target.transport == Transport::Tls
            && target.addr.ip() == d.peer.addr.ip()
        {
            return d.peer;
        }
        target
    }

    /// Responds on the caller's INVITE transaction, on the wire at once (ahead of whatever
    /// else the call asks for next: the caller hears 100 before the lookup, 180 before routing).
    fn respond_invite(&mut self, now: Instant, resp: Response) {
        let resp = match (self.reliable.as_mut(), resp.status) {
            (Some(rel), 101..=199) => match rel.provisional(now, resp) {
                Some(r) => r,
                None => return, // it waits for a PRACK, or adds nothing
            },
            (Some(rel), 200..=299) if rel.holds_2xx() => {
                debug!("2xx held until the early media's PRACK (RFC 3262 §3)");
                self.held_2xx = Some(resp);
                return;
            }
            (Some(rel), 200..) => {
                rel.finish();
                self.held_2xx = None;
                resp
            }
            _ => resp,
        };
        self.send_on_invite(now, resp);
    }

    /// Puts a response on the caller's INVITE transaction as it is.
    fn send_on_invite(&mut self, now: Instant, resp: Response) {
        if let Some(i) = self
            .servers
            .iter()
            .position(|s| s.tx.key == self.invite_key)
        {
            self.servers[i].tx.respond(now, &resp);
            self.flush_server(i);
        }
    }

    /// The caller's INVITE still awaits its final response.
    fn invite_pending(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.tx.key == self.invite_key && matches!(s.tx.state(), ServerState::Proceeding))
    }

    /// Our 2xx to the caller is still being retransmitted for want of an ACK.
    fn caller_ack_awaited(&self) -> bool {
        !self.caller_acked
            && self.servers.iter().any(|s| {
                s.tx.key == self.invite_key && matches!(s.tx.state(), ServerState::Accepted)
            })
    }

    /// Moves transaction outputs to the network and to the call logic until nothing is left.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            let mut events: Vec<(usize, TxOutput)> = Vec::new();
            let mut sends = Vec::new();
            for (i, c) in self.clients.iter_mut().enumerate() {
                while let Some(o) = c.tx.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => sends.push((c.peer, b)),
                        other => events.push((i, other)),
                    }
                }
            }
            let mut server_events: Vec<(usize, TxOutput)> = Vec::new();
            for (i, s) in self.servers.iter_mut().enumerate() {
                while let Some(o) = s.tx.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => sends.push((s.peer, b)),
                        other => server_events.push((i, other)),
                    }
                }
            }
            for (peer, bytes) in sends {
                self.send(peer, bytes);
            }
            for (i, ev) in events {
                progressed = true;
                let (leg, purpose, attempt) = (
                    self.clients[i].leg,
                    self.clients[i].purpose,
                    self.clients[i].attempt,
                );
                if let TxOutput::Response(r) = &ev {
                    if purpose == Purpose::AgentInvite && r.status < 200 {
                        // Any provisional allows a CANCEL (RFC 3261 §9.1).
                        self.clients[i].provisional = true;
                        if std::mem::take(&mut self.clients[i].cancel_pending) {
                            self.send_cancel(now, i);
                        }
                    }
                }
                match ev {
                    TxOutput::Response(r) if purpose == Purpose::AgentInvite => {
                        self.on_agent_invite_response(now, attempt, r)
                    }
                    // A re-INVITE on an agent leg since retired (transferred away): over.
                    TxOutput::Response(_)
                        if leg == LegId::Agent
                            && attempt != self.attempt
                            && matches!(purpose, Purpose::ReInvite | Purpose::Refresh) => {}
                    TxOutput::Response(r) => self.on_client_response(now, leg, purpose, r),
                    TxOutput::Timeout
                        if purpose == Purpose::AgentInvite && attempt != self.attempt => {}
                    // A re-INVITE on an agent leg since retired (transferred away, or the
                    // agent left for the survey) that times out ends nothing.
                    TxOutput::Timeout
                        if leg == LegId::Agent
                            && attempt != self.attempt
                            && matches!(purpose, Purpose::ReInvite | Purpose::Refresh) => {}
                    TxOutput::Timeout => self.on_client_timeout(now, leg, purpose),
                    _ => {}
                }
            }
            for (i, ev) in server_events {
                progressed = true;
                let leg = self.servers[i].leg;
                let ours = self.servers[i].tx.key == self.invite_key;
                match ev {
                    TxOutput::Request(ack) => {
                        let answered = self.on_ack(leg, ack);
                        if ours && !answered {
                            // A delayed offer's ACK must carry the answer (RFC 3264 §4).
                            warn!("the caller's ACK has no usable answer to our offer");
                            self.hang_up(now, None);
                        }
                        if ours {
                            self.caller_acked = true;
                            if let Some(d) = self.mirror_deferred[LegId::Caller.index()] {
                                self.mirror_to(now, LegId::Caller, d);
                            }
                            if std::mem::take(&mut self.caller_bye_deferred) {
                                self.bye(now, LegId::Caller);
                            }
                        }
                    }
                    TxOutput::Timeout => {
                        let invite = self.servers[i].tx.request.method == Method::Invite;
                        if invite && self.phase != Phase::Ended {
                            warn!(?leg, "no ACK for our final response");
                            self.hang_up(now, None);
                        } else if ours && std::mem::take(&mut self.caller_bye_deferred) {
                            // The dialog is confirmed without an ACK: end it (RFC 3261 §13.3.1.4).
                            self.bye(now, LegId::Caller);
                        }
                    }
                    _ => {}
                }
            }
            let before = self.clients.len() + self.servers.len();
            self.clients
                .retain(|c| c.tx.state() != ClientState::Terminated);
            self.servers
                .retain(|s| s.tx.state() != ServerState::Terminated);
            if !progressed && before == self.clients.len() + self.servers.len() {
                break;
            }
        }
    }

    /// Something the relay saw: a leg gone silent ends an established call.
    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::Silent { leg } if self.phase == Phase::Up => {
                warn!(?leg, "no RTP within the timeout; hanging up");
                self.rtp_timeout = true;
                self.hang_up(now, None);
            }
            MediaEvent::Played { leg: LegId::Caller } => {
                let step = self.survey.as_mut().and_then(|s| s.on_played(now));
                self.survey_step(now, step);
            }
            MediaEvent::Digit {
                leg: LegId::Caller,
                digit,
            } => self.survey_digit(now, digit),
            MediaEvent::Silent { .. } | MediaEvent::Played { .. } | MediaEvent::Digit { .. } => {}
        }
        self.pump(now);
    }

    /// The silence timeout to watch with, unless a leg is on hold (or the agent's leg is gone
    /// and the caller answers the survey).
    fn media_watch(&self) -> Option<Duration> {
        self.cfg
            .rtp_timeout
            .filter(|_| !self.on_hold && self.survey.is_none())
    }

    /// Transaction timers and the fixed agent's ring timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        for c in &mut self.clients {
            c.tx.handle_timeout(now);
        }
        for s in &mut self.servers {
            s.tx.handle_timeout(now);
        }
        match self.reliable.as_mut().and_then(|r| r.on_timeout(now)) {
            Some(reliable::Due::Retransmit(r)) if self.invite_pending() => {
                self.send_on_invite(now, r)
            }
            Some(reliable::Due::GiveUp) if self.invite_pending() => {
                warn!("no PRACK for a reliable provisional in 64*T1: the call is refused (RFC 3262 §3)");
                self.held_2xx = None;
                self.disposition = Some(Disposition::Failed);
                self.cancel_agent(now);
                if self.agent_answered {
                    self.bye(now, LegId::Agent);
                }
                let tag = self.caller_leg.local_tag().to_string();
                let resp = self.invite.response(500, Some(&tag));
                self.send_on_invite(now, resp);
                self.final_status = 500;
                self.end(now, None);
            }
            _ => {}
        }
        if self.ring_deadline.is_some_and(|d| now >= d) {
            self.ring_deadline = None;
            if self.transferring && self.number_target.is_some() {
                self.cancel_agent(now);
                self.number_failed(now);
            } else if self.phase == Phase::Ringing {
                info!("agent did not answer in time");
                self.disposition = Some(Disposition::Missed);
                self.cancel_agent(now);
                self.fail_caller(now, 480);
                self.end(now, None);
            }
        }
        for leg in [LegId::Caller, LegId::Agent] {
            if self.phase != Phase::Up {
                break;
            }
            let due = self.session[leg.index()]
                .as_mut()
                .and_then(|s| s.on_timeout(now));
            match due {
                Some(Due::Refresh) => self.refresh_session(now, leg),
                Some(Due::Expired) => {
                    warn!(?leg, "session expired: its refreshes stopped (RFC 4028)");
                    self.session_expired = true;
                    self.hang_up(now, None);
                }
                None => {}
            }
        }
        if self.phase == Phase::Up {
            let step = self.survey.as_mut().and_then(|s| s.on_timeout(now));
            self.survey_step(now, step);
        }
        self.consult_timeout(now);
        self.pump(now);
    }

    /// We are the refresher on `leg`: a re-INVITE repeating the session it has (version
    /// bumped, direction kept), unless an INVITE or offer is still open on that dialog.
    fn refresh_session(&mut self, now: Instant, leg: LegId) {
        let i = leg.index();
        let Some(terms) = self.session_terms[i] else {
            return;
        };
        if self.offer_open(leg) || (leg == LegId::Caller && !self.caller_acked) {
            if let Some(s) = self.session[i].as_mut() {
                s.refresh_failed(now);
            }
            return;
        }
        let (codec, me) = (self.codec, self.cfg.me.clone());
        let dir = self.local_dir[i];
        let lm = self.leg_media(leg);
        lm.local.bump_version();
        let offer = sdp::offer(&lm.local, &[codec], lm.dtmf_pt, dir);
        lm.pending_offer = Some(offer.clone());
        let mut reinvite = self.dialog(leg).request(Method::Invite, &me, None);
        reinvite
            .headers
            .push(HeaderName::SessionExpires, terms.request_value());
        reinvite.headers.push(HeaderName::Supported, "timer");
        reinvite
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        reinvite.body = offer.to_string().into_bytes();
        info!(?leg, "refreshing the session");
        self.send_client(now, reinvite, leg, Purpose::Refresh);
    }

    /// The phone's 2xx to our INVITE set the agent leg's session timer (RFC 4028 §7.2): none
    /// without `Session-Expires`; `refresher=uac` is us.
    fn agent_session(&mut self, now: Instant, r: &Response) {
        let Some(se) = r
            .headers
            .get(&HeaderName::SessionExpires)
            .and_then(SessionExpires::parse)
        else {
            return;
        };
        let terms = Terms {
            secs: 0,
            we_refresh: true,
            peer_supports: true,
        }
        .after_our_refresh(Some(se));
        info!(
            secs = terms.secs,
            we_refresh = terms.we_refresh,
            "agent leg session timer"
        );
        let i = LegId::Agent.index();
        self.session_terms[i] = Some(terms);
        self.session[i] = Some(SessionTimer::new(now, terms));
    }

    /// An INVITE of ours is in progress on `leg`, or an offer of ours there awaits its answer.
    fn offer_open(&self, leg: LegId) -> bool {
        let inviting = self.clients.iter().any(|c| {
            c.leg == leg
                && matches!(c.purpose, Purpose::ReInvite | Purpose::Refresh)
                && matches!(c.tx.state(), ClientState::Calling | ClientState::Proceeding)
        });
        let lm = match leg {
            LegId::Caller => &self.caller_media,
            LegId::Agent => &self.agent_media,
        };
        inviting || lm.pending_offer.is_some()
    }

    /// A refresh from the peer on `leg` (re-INVITE or UPDATE, RFC 4028 §9; we are its UAS):
    /// the 2xx echoes its interval and the timer restarts.
    fn session_refreshed(&mut self, now: Instant, leg: LegId, req: &Request, resp: &mut Response) {
        let i = leg.index();
        if self.session[i].is_none() {
            return;
        }
        // The §9 rules again, for this request (without Session-Expires the interval stays).
        let UasNegotiation::Timed(terms) =
            negotiate_uas(req, self.cfg.min_se_secs, self.session_terms[i])
        else {
            return;
        };
        self.session_terms[i] = Some(terms);
        resp.headers
            .push(HeaderName::SessionExpires, terms.answer_value());
        if terms.peer_supports {
            resp.headers.push(HeaderName::Require, "timer");
        }
        if let Some(s) = self.session[i].as_mut() {
            s.refreshed(now, terms);
        }
    }

    /// A SIP message on one of the call's Call-IDs, from `peer`.
    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        self.on_message(now, msg, peer);
        self.pump(now);
    }

    fn on_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        if self.consult_message(now, &msg, peer) {
            return;
        }
        let call_id = msg.headers().get(&HeaderName::CallId).unwrap_or("");
        if call_id != self.agent_leg.call_id && self.agent_call_ids.iter().any(|c| c == call_id) {
            return self.on_stale_leg(now, msg, peer);
        }
        let leg = if call_id == self.agent_leg.call_id {
            LegId::Agent
        } else {
            LegId::Caller
        };
        match msg {
            Message::Response(resp) => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.tx.matches(&resp)) {
                    c.tx.handle_response(now, resp);
                } else if leg == LegId::Agent
                    && resp.status / 100 == 2
                    && resp.cseq().is_some_and(|c| c.method == Method::Invite)
                {
                    // A 2xx retransmitted after the transaction ended: ACK it again.
                    if let Some(ack) = self.agent_ack.clone() {
                        self.send(self.agent_leg.peer, ack);
                    }
                }
            }
            Message::Request(mut req) => {
                if peer.transport == Transport::Udp {
                    req.stamp_source(peer.addr);
                }
                self.on_request(now, leg, req, peer)
            }
        }
    }

    /// A message on the Call-ID of an agent leg we no longer bridge (a withdrawn or released
    /// offer): responses still complete their transactions; requests are answered without
    /// touching the call (BYE and CANCEL 200, anything else 481).
    fn on_stale_leg(&mut self, now: Instant, msg: Message, peer: Peer) {
        match msg {
            Message::Response(resp) => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.tx.matches(&resp)) {
                    c.tx.handle_response(now, resp);
                }
            }
            Message::Request(req) if req.method == Method::Ack => {
                // The ACK of our final response to a request on the old leg ends that
                // transaction (else its timer would fire as if our answer were lost).
                let seq = req.cseq().map(|c| c.seq);
                let call_id = req.call_id().map(str::to_string);
                let key = ServerKey::of(&req);
                if let Some(s) = self.servers.iter_mut().find(|s| {
                    Some(&s.tx.key) == key.as_ref()
                        || (s.tx.request.method == Method::Invite
                            && s.tx.request.cseq().map(|c| c.seq) == seq
                            && s.tx.request.call_id().map(str::to_string) == call_id)
                }) {
                    s.tx.handle_request(now, req);
                }
            }
            Message::Request(req) => {
                let status = match req.method {
                    Method::Bye | Method::Cancel => 200,
                    _ => 481,
                };
                let peer = response_peer(&req, peer);
                let resp = req.response(status, None);
                self.send(peer, Message::Response(resp).to_bytes());
            }
        }
    }

    fn on_request(&mut self, now: Instant, leg: LegId, req: Request, peer: Peer) {
        let Some(key) = ServerKey::of(&req) else {
            return;
        };
        // Retransmissions and ACKs belong to an existing transaction.
        if let Some(s) = self.servers.iter_mut().find(|s| s.tx.key == key) {
            s.tx.handle_request(now, req);
            return;
        }
        if req.method == Method::Ack {
            // The ACK for a 2xx is its own transaction with a new branch (RFC 3261 §17.1.1.3):
            // match it to our INVITE server transaction by dialog and CSeq number.
            let seq = req.cseq().map(|c| c.seq);
            let ours = self.dialog(leg).local_tag().to_string();
            let in_dialog = req.to().is_some_and(|t| t.tag() == Some(ours.as_str()));
            if let Some(s) = self.servers.iter_mut().find(|s| {
                s.leg == leg
                    && s.tx.request.method == Method::Invite
                    && s.tx.request.cseq().map(|c| c.seq) == seq
            }) {
                if in_dialog {
                    s.tx.handle_request(now, req);
                }
            }
            return;
        }
        let peer = response_peer(&req, peer);
        let reliable = peer.transport.reliable();
        self.servers.push(Server {
            tx: ServerTransaction::new(req.clone(), key, reliable, self.cfg.timers),
            peer,
            leg,
        });
        let tag = self.dialog(leg).local_tag().to_string();
        if req.method == Method::Cancel {
            let target = ServerKey::cancelled_invite(&req);
            let ok = req.response(200, Some(&tag));
            if target.as_ref() == Some(&self.invite_key) && self.invite_pending() {
                info!("caller cancelled");
                self.caller_gave_up(now, ok);
            } else if target.as_ref() == Some(&self.invite_key) {
                // Too late: the INVITE already has its final response (RFC 3261 §9.2).
                self.respond_last(now, ok);
            } else {
                let resp = req.response(481, Some(&tag));
                self.respond_last(now, resp);
            }
            return;
        }
        // In-dialog request: the CSeq must advance (RFC 3261 §12.2.2).
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
        if !self.dialog(leg).accept_remote_cseq(seq) {
            let resp = req.response(500, Some(&tag));
            self.respond_last(now, resp);
            return;
        }
        match req.method {
            Method::Bye if leg == LegId::Caller && self.phase == Phase::Ringing => {
                // Only possible after an early dialog (183): end it like a CANCEL.
                info!("caller hung up while ringing");
                self.caller_gave_up(now, req.response(200, Some(&tag)));
            }
            Method::Bye if leg == LegId::Agent && self.refer_pending => {
                // The phone hung up after asking for the transfer (blind transfer on many
                // phones): the caller waits with music for the target, not dropped.
                let resp = req.response(200, Some(&tag));
                self.respond_last(now, resp);
                info!("the phone left after its REFER; the caller waits for the target");
                self.agent_answered = false;
                self.media(MediaCommand::Play(LegId::Caller, Music::Hold));
            }
            Method::Bye if leg == LegId::Agent && self.survey_due() => {
                // The agent hung up first in a queue with a survey: the caller stays for it.
                let resp = req.response(200, Some(&tag));
                self.respond_last(now, resp);
                self.start_survey(now);
            }
            Method::Bye if leg == LegId::Agent && self.consult.is_some() => {
                // The agent put the phone down during a consultation: the caller goes to the
                // consulted party (now, or when it answers), not off the line.
                let resp = req.response(200, Some(&tag));
                self.respond_last(now, resp);
                self.agent_left_consultation(now);
            }
            Method::Bye => {
                let resp = req.response(200, Some(&tag));
                self.respond_last(now, resp);
                info!(?leg, "hang-up");
                self.hang_up(now, Some(leg));
            }
            Method::Invite => self.on_reinvite(now, leg, req),
            Method::Refer if leg == LegId::Agent => self.on_refer(now, req, &tag),
            Method::Refer => {
                // Only an agent's phone transfers its call.
                let mut r = req.response(403, Some(&tag));
                r.headers.push(
                    HeaderName::Warning,
                    "399 screenpop \"REFER is taken from agents' phones only\"",
                );
                self.respond_last(now, r);
            }
            Method::Update => self.on_update(now, leg, req),
            Method::Prack => self.on_prack(now, leg, req),
            Method::Options | Method::Info => {
                let mut resp = req.response(200, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
                if req.method == Method::Info && leg == LegId::Caller {
                    // A key press by SIP INFO, from gateways that send no RFC 4733 events.
                    let ct = req.headers.get(&HeaderName::ContentType);
                    if let Some(digit) = super::survey::info_digit(ct, &req.body) {
                        self.survey_digit(now, digit);
                    }
                }
            }
            Method::Extension(_) => {
                let resp = req.response(501, Some(&tag));
                self.respond_last(now, resp);
            }
            _ => {
                let mut resp = req.response(405, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
            }
        }
    }

    /// The caller left before an answer (CANCEL, or BYE on an early dialog): `ok` answers that
    /// request first, then the INVITE gets 487 (RFC 3261 §9.2) and the agent leg is cancelled.
    fn caller_gave_up(&mut self, now: Instant, ok: Response) {
        self.respond_last(now, ok);
        self.flush_last();
        let tag = self.caller_leg.local_tag().to_string();
        let resp = self.invite.response(487, Some(&tag));
        self.respond_invite(now, resp);
        self.final_status = 487;
        self.disposition = Some(Disposition::Abandoned);
        self.cancel_agent(now);
        if self.agent_answered {
            // The phone answered while our 2xx waited for a PRACK (RFC 3262).
            self.bye(now, LegId::Agent);
        }
        self.end(now, Some(LegId::Caller));
    }

    /// Sends what the most recent server transaction has queued, ahead of everything else.
    fn flush_last(&mut self) {
        if let Some(i) = self.servers.len().checked_sub(1) {
            self.flush_server(i);
        }
    }

    /// Sends what server transaction `i` has queued (a response produces only transmissions).
    fn flush_server(&mut self, i: usize) {
        let peer = self.servers[i].peer;
        while let Some(o) = self.servers[i].tx.poll_output() {
            match o {
                TxOutput::Transmit(b) => self.send(peer, b),
                other => debug_assert!(false, "a response produced {other:?}"),
            }
        }
    }

    /// Responds on the most recently created server transaction.
    fn respond_last(&mut self, now: Instant, resp: Response) {
        if let Some(s) = self.servers.last_mut() {
            s.tx.respond(now, &resp);
        }
    }

    /// A PRACK for one of our reliable provisionals (RFC 3262 §3): 200, then whatever waited
    /// for it (the next provisional, or the held 2xx). Anything unmatched gets 481.
    fn on_prack(&mut self, now: Instant, leg: LegId, req: Request) {
        let tag = self.dialog(leg).local_tag().to_string();
        let acked = match (leg, self.reliable.as_mut(), RAck::of(&req)) {
            (LegId::Caller, Some(rel), Some(rack)) => rel.prack(now, rack),
            _ => Prack::NoMatch,
        };
        let Prack::Acked { next } = acked else {
            let resp = req.response(481, Some(&tag));
            self.respond_last(now, resp);
            return;
        };
        let resp = req.response(200, Some(&tag));
        self.respond_last(now, resp);
        self.flush_last();
        if !self.invite_pending() {
            return;
        }
        if let Some(next) = next {
            self.send_on_invite(now, next);
        }
        if self.reliable.as_ref().is_some_and(|r| !r.holds_2xx()) {
            if let Some(ok) = self.held_2xx.take() {
                self.respond_invite(now, ok);
            }
        }
    }

    fn on_reinvite(&mut self, now: Instant, leg: LegId, req: Request) {
        let tag = self.dialog(leg).local_tag().to_string();
        let pending = self.clients.iter().any(|c| {
            matches!(c.purpose, Purpose::ReInvite | Purpose::Refresh)
                && matches!(c.tx.state(), ClientState::Calling | ClientState::Proceeding)
        });
        if self.phase != Phase::Up || pending || self.leg_media(leg).pending_offer.is_some() {
            // Glare or not yet established (RFC 3261 §14.2).
            let resp = req.response(491, Some(&tag));
            self.respond_last(now, resp);
            return;
        }
        if self.refuse_short_session(now, leg, &req, &tag) {
            return;
        }
        if let Some(c) = req.contact() {
            self.dialog(leg).remote_target = c.uri;
        }
        let codec = self.codec;
        let me = self.cfg.me.clone();
        if req.body.is_empty() {
            // Offer in our 2xx, answer in the ACK (RFC 3264 §4).
            let lm = self.leg_media(leg);
            lm.local.bump_version();
            let offer = sdp::offer(&lm.local, &[codec], lm.dtmf_pt, Direction::SendRecv);
            lm.pending_offer = Some(offer.clone());
            let mut resp = req.response(200, Some(&tag));
            resp.headers
                .push(HeaderName::Contact, self.dialog(leg).contact(&me));
            self.session_refreshed(now, leg, &req, &mut resp);
            let resp = resp.with_body("application/sdp", offer.to_string().into_bytes());
            self.respond_last(now, resp);
            return;
        }
        self.answer_offer(now, leg, &req, &tag);
    }

    /// Answers the offer in a re-INVITE or UPDATE on `leg` (400 when it does not parse, 488
    /// when nothing is in common), takes the peer's new media and mirrors a change of
    /// direction to the other leg.
    fn answer_offer(&mut self, now: Instant, leg: LegId, req: &Request, tag: &str) {
        let Ok(offer) = SessionDescription::parse(&req.body) else {
            let resp = req.response(400, Some(tag));
            self.respond_last(now, resp);
            return;
        };
        let codec = self.codec;
        let lm = self.leg_media(leg);
        lm.local.bump_version();
        let Ok(neg) = sdp::answer(&offer, &lm.local, &[codec]) else {
            let resp = req.response(488, Some(tag));
            self.respond_last(now, resp);
            return;
        };
        lm.dtmf_pt = neg.dtmf_pt;
        keep_suite(&mut lm.local, neg.srtp);
        let body = neg.answer.to_string().into_bytes();
        lm.last_sdp = Some(body.clone());
        let offered_dir = neg.direction.reversed();
        info!(?leg, method = %req.method, direction = offered_dir.as_str(), "new offer");
        self.peer_direction(leg, neg.direction, offered_dir);
        self.media(MediaCommand::Watch(self.media_watch()));
        self.media(MediaCommand::SetRemote(
            leg,
            remote_media(neg.remote_rtp, neg.codec, neg.dtmf_pt, neg.srtp),
        ));
        let mut resp = req.response(200, Some(tag));
        let contact = self.leg_contact(leg);
        resp.headers.push(HeaderName::Contact, contact);
        resp.headers.push(HeaderName::Allow, ALLOW);
        self.session_refreshed(now, leg, req, &mut resp);
        let resp = resp.with_body("application/sdp", body);
        self.respond_last(now, resp);
        if leg == LegId::Agent {
            // The phone's own hold button: the caller hears music, as with the desktop's.
            // It holds when it stops receiving (sendonly, inactive); a phone we hold that
            // refreshes its session offers recvonly and is not pressing anything.
            let receives = matches!(offered_dir, Direction::SendRecv | Direction::RecvOnly);
            match (receives, self.hold) {
                (false, None) => self.start_hold(now, HoldBy::Phone),
                (true, Some(h)) if h.by == HoldBy::Phone => self.end_hold(now),
                _ => {}
            }
            return;
        }
        self.mirror(now, leg, offered_dir);
    }

    /// A re-INVITE or UPDATE on `leg` whose `Session-Expires` is below our Min-SE gets 422
    /// (RFC 4028 §9); true when it did.
    fn refuse_short_session(&mut self, now: Instant, leg: LegId, req: &Request, tag: &str) -> bool {
        let UasNegotiation::TooSmall { min_se } =
            negotiate_uas(req, self.cfg.min_se_secs, self.session_terms[leg.index()])
        else {
            return false;
        };
        let mut resp = req.response(422, Some(tag));
        resp.headers.push(HeaderName::MinSe, min_se.to_string());
        self.respond_last(now, resp);
        true
    }

    /// An UPDATE within the dialog (RFC 3311): without a body it is a session refresh; with
    /// an offer it is answered like a re-INVITE's, and a change of direction reaches the other
    /// leg as a re-INVITE (which every phone takes; UPDATE support varies).
    fn on_update(&mut self, now: Instant, leg: LegId, req: Request) {
        let tag = self.dialog(leg).local_tag().to_string();
        if self.phase == Phase::Ended {
            let resp = req.response(481, Some(&tag));
            self.respond_last(now, resp);
            return;
        }
        if !req.body.is_empty() {
            let status = if self.offer_open(leg) {
                // Our offer there awaits its answer (RFC 3311 §5.2).
                Some(491)
            } else if self.phase != Phase::Up {
                // Early: the caller's offer has no reliable answer yet (RFC 3311 §5.2).
                Some(500)
            } else {
                None
            };
            if let Some(status) = status {
                let mut resp = req.response(status, Some(&tag));
                if status == 500 {
                    resp.headers.push(HeaderName::RetryAfter, "1");
                }
                self.respond_last(now, resp);
                return;
            }
        }
        if self.refuse_short_session(now, leg, &req, &tag) {
            return;
        }
        // UPDATE is a target refresh request (RFC 3311 §5.2, RFC 3261 §12.2).
        if let Some(c) = req.contact() {
            self.dialog(leg).remote_target = c.uri;
        }
        if !req.body.is_empty() {
            self.answer_offer(now, leg, &req, &tag);
            return;
        }
        let mut resp = req.response(200, Some(&tag));
        let contact = self.leg_contact(leg);
        resp.headers.push(HeaderName::Contact, contact);
        resp.headers.push(HeaderName::Allow, ALLOW);
        self.session_refreshed(now, leg, &req, &mut resp);
        self.respond_last(now, resp);
    }

    /// The peer on `leg` changed direction: we answered `ours`, it offered `theirs`.
    fn peer_direction(&mut self, leg: LegId, ours: Direction, theirs: Direction) {
        self.local_dir[leg.index()] = ours;
        self.held[leg.index()] = theirs != Direction::SendRecv;
        self.on_hold = self.held.iter().any(|h| *h) || self.hold.is_some() || self.transferring;
    }

    /// Offers `offered_dir` to the leg other than `leg` (a hold or resume on `leg`).
    fn mirror(&mut self, now: Instant, leg: LegId, offered_dir: Direction) {
        self.mirror_to(now, leg.other(), offered_dir);
    }

    /// Offers `dir` on `other` unless that is what it already has; waits while an INVITE or
    /// offer is open there (or, on the caller's leg, until our 2xx is ACKed).
    fn mirror_to(&mut self, now: Instant, other: LegId, offered_dir: Direction) {
        let i = other.index();
        if self.phase != Phase::Up {
            return;
        }
        if self.offer_open(other)
            || (other == LegId::Caller && !self.caller_acked)
            || (other == LegId::Agent
                && (self.transferring || self.consult.is_some() || self.survey.is_some()))
        {
            self.mirror_deferred[i] = Some(offered_dir);
            return;
        }
        // A hold from the desk keeps the phone held whatever the caller's side does (its
        // session refreshes repeat sendrecv).
        let offered_dir = match (other, self.hold) {
            (LegId::Agent, Some(h)) if h.by == HoldBy::Desk && self.control_pending.is_none() => {
                match offered_dir {
                    Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
                    _ => Direction::Inactive,
                }
            }
            _ => offered_dir,
        };
        self.mirror_deferred[i] = None;
        if self.local_dir[i] == offered_dir {
            return;
        }
        self.mirror_inflight[i] = Some(self.local_dir[i]);
        self.local_dir[i] = offered_dir;
        let (codec, me) = (self.codec, self.cfg.me.clone());
        let om = self.leg_media(other);
        om.local.bump_version();
        let o = sdp::offer(&om.local, &[codec], om.dtmf_pt, offered_dir);
        om.pending_offer = Some(o.clone());
        let mut reinvite = self.dialog(other).request(Method::Invite, &me, None);
        reinvite
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        reinvite.body = o.to_string().into_bytes();
        self.send_client(now, reinvite, other, Purpose::ReInvite);
    }

    /// False when the ACK had to answer the offer in our 2xx to a delayed offer and does not.
    fn on_ack(&mut self, leg: LegId, ack: Request) -> bool {
        if leg == LegId::Caller && std::mem::take(&mut self.ack_answer_awaited) {
            return !ack.body.is_empty() && self.apply_answer(leg, &ack.body);
        }
        if ack.body.is_empty() {
            // An offer in our 2xx to a re-INVITE without SDP stays unanswered: drop it rather
            // than refuse every later offer as glare.
            self.leg_media(leg).pending_offer = None;
        } else {
            self.apply_answer(leg, &ack.body);
        }
        true
    }

    /// Takes the peer's answer to our pending offer on `leg` into the relay. False when there
    /// was no offer pending or the answer is unusable.
    fn apply_answer(&mut self, leg: LegId, body: &[u8]) -> bool {
        let lm = self.leg_media(leg);
        let (Some(offer), Ok(answer)) = (lm.pending_offer.take(), SessionDescription::parse(body))
        else {
            return false;
        };
        let Ok(acc) = sdp::accept_answer(&offer, &answer) else {
            return false;
        };
        lm.dtmf_pt = acc.dtmf_pt;
        keep_suite(&mut lm.local, acc.srtp);
        if leg == LegId::Agent && self.delayed_offer && self.phase == Phase::Ringing {
            // The codec both legs will use: the caller is offered only this one.
            self.codec = acc.codec;
        }
        self.media(MediaCommand::SetRemote(
            leg,
            remote_media(acc.remote_rtp, acc.codec, acc.dtmf_pt, acc.srtp),
        ));
        true
    }

    /// Responses to our re-INVITEs, BYEs and CANCELs (agent INVITEs have their own handler).
    fn on_client_response(&mut self, now: Instant, leg: LegId, purpose: Purpose, r: Response) {
        if !matches!(purpose, Purpose::ReInvite | Purpose::Refresh) {
            return;
        }
        if r.status < 200 {
            return;
        }
        let i = leg.index();
        if leg == LegId::Agent && purpose == Purpose::ReInvite {
            self.settle_control(now, r.status);
        }
        if r.status / 100 == 2 {
            self.ack_2xx(leg, &r);
            self.apply_answer(leg, &r.body);
            self.mirror_inflight[i] = None;
            if purpose == Purpose::Refresh {
                // The caller may have moved the interval or the refresher (RFC 4028 §7.2).
                let se = r
                    .headers
                    .get(&HeaderName::SessionExpires)
                    .and_then(SessionExpires::parse);
                if let Some(terms) = self.session_terms[i].map(|t| t.after_our_refresh(se)) {
                    self.session_terms[i] = Some(terms);
                    if let Some(s) = self.session[i].as_mut() {
                        s.refreshed(now, terms);
                    }
                }
            }
        } else {
            debug!(?leg, status = r.status, "re-INVITE refused");
            self.leg_media(leg).pending_offer = None;
            if let Some(prev) = self.mirror_inflight[i].take() {
                self.local_dir[i] = prev;
            }
            if purpose == Purpose::Refresh {
                if matches!(r.status, 408 | 481) {
                    // The dialog is gone (RFC 4028 §10).
                    warn!(status = r.status, "session refresh failed; ending call");
                    self.session_expired = true;
                    self.hang_up(now, None);
                    return;
                }
                if let Some(s) = self.session[i].as_mut() {
                    s.refresh_failed(now);
                }
            }
        }
        if let Some(d) = self.mirror_deferred[i] {
            self.mirror_to(now, leg, d);
        }
    }

    /// ACKs a 2xx to an INVITE we sent on `leg` (RFC 3261 §13.2.2.4): a new transaction-less
    /// request to the remote target, with the INVITE's CSeq number.
    fn ack_2xx(&mut self, leg: LegId, r: &Response) {
        let me = self.cfg.me.clone();
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = self.dialog(leg).request(Method::Ack, &me, Some(seq));
        let peer = self.leg_peer(leg);
        let bytes = Message::Request(ack).to_bytes();
        if leg == LegId::Agent {
            self.agent_ack = Some(bytes.clone());
        }
        self.send(peer, bytes);
    }

    fn on_agent_invite_response(&mut self, now: Instant, attempt: u32, r: Response) {
        let status = r.status;
        if attempt != self.attempt {
            // An agent we stopped ringing answered anyway: ACK and release that dialog.
            if status / 100 == 2 {
                if let Some((_, d)) = self.old_agent_legs.iter().find(|(a, _)| *a == attempt) {
                    let d = d.clone();
                    self.release_dialog(now, d, &r);
                }
            }
            return;
        }
        if status == 100 {
            return;
        }
        if (101..200).contains(&status) {
            if let Some(to) = r.to() {
                if to.tag().is_some() {
                    self.agent_leg.remote = to;
                }
            }
            if self.phase == Phase::Ringing && self.invite_pending() && !self.queue_music_on {
                let tag = self.caller_leg.local_tag().to_string();
                let mut resp = self
                    .invite
                    .response(if status == 183 { 183 } else { 180 }, Some(&tag));
                resp.headers
                    .push(HeaderName::Contact, self.caller_leg.contact(&self.cfg.me));
                if status == 183 && !r.body.is_empty() {
                    // Early media: relay the agent side's audio (ringback, announcements).
                    self.accept_agent_sdp(&r.body);
                    if let Some(body) = self.caller_media.last_sdp.clone() {
                        resp = resp.with_body("application/sdp", body);
                    }
                }
                self.respond_invite(now, resp);
            }
            return;
        }
        if status / 100 == 2 {
            if self.agent_answered {
                let tag = r.to().and_then(|t| t.tag().map(str::to_string));
                if tag.as_deref() == self.agent_leg.remote_tag() {
                    // A retransmitted 2xx: our ACK was lost.
                    if let Some(ack) = self.agent_ack.clone() {
                        self.send(self.agent_leg.peer, ack);
                    }
                } else {
                    // A second fork answered (RFC 3261 §13.2.2.4): ACK it and release it,
                    // leaving the bridged dialog alone.
                    let fork = self.agent_leg.clone();
                    self.release_dialog(now, fork, &r);
                }
                return;
            }
            self.agent_leg.establish_from(&r);
            self.ack_2xx(LegId::Agent, &r);
            self.agent_answered = true;
            if self.transferring && self.phase == Phase::Up {
                self.transfer_answered(now, &r);
                return;
            }
            if self.phase != Phase::Ringing || !self.invite_pending() {
                // The caller is gone (CANCEL or timeout crossed the answer): release the agent.
                self.bye(now, LegId::Agent);
                return;
            }
            if !self.accept_agent_sdp(&r.body) {
                warn!("agent answered without a usable SDP answer");
                self.bye(now, LegId::Agent);
                self.disposition = Some(Disposition::Failed);
                self.fail_caller(now, 488);
                self.end(now, None);
                return;
            }
            self.agent_session(now, &r);
            self.answer_caller(now);
            return;
        }
        if matches!(status, 401 | 407) && self.transferring {
            if let Some(gw) = self.number_target.clone() {
                let uri = self.agent_leg.remote_target.to_string();
                if let Some(auth) = challenge_answer(&gw, &r, &uri, &mut self.gateway_tries) {
                    self.agent_auth = Some(auth);
                    self.agent_leg.remote.remove_param("tag");
                    self.agent_media.pending_offer = None;
                    self.start_agent_leg(now);
                    return;
                }
            }
        }
        if status == 422 && self.agent_min_se.is_none() && self.ringing_an_agent() {
            // RFC 4028 §7.4: the phone wants a longer interval; ask again with its Min-SE, once
            // (a second 422 is refused like any other failure).
            let asked = self
                .cfg
                .session_expires_secs
                .max(self.cfg.min_se_secs)
                .max(self.agent_min_se.unwrap_or(0));
            let wanted = r
                .headers
                .get(&HeaderName::MinSe)
                .and_then(|v| v.split(';').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|m| *m > asked && *m <= MAX_SESSION_SECS);
            if let Some(min) = wanted.filter(|_| self.cfg.session_expires_secs > 0) {
                info!(
                    min_se = min,
                    "the phone wants a longer session interval: asking again"
                );
                self.agent_min_se = Some(min);
                self.agent_leg.remote.remove_param("tag");
                self.agent_media.pending_offer = None;
                self.start_agent_leg(now);
                return;
            }
        }
        if matches!(status, 488 | 606)
            && self.agent_media.local.srtp.is_some()
            && self.cfg.agent_srtp == AgentSrtp::Tls
            && self.ringing_an_agent()
        {
            // A phone on TLS without SRTP: ring it again with plain RTP (RFC 3261 §14.1 lets a
            // UAC retry a refused INVITE in the same dialog set, CSeq advanced, no To tag).
            info!(status, "the phone refused SRTP: offering it plain RTP");
            self.agent_plain_only = true;
            self.agent_leg.remote.remove_param("tag");
            self.agent_media.pending_offer = None;
            self.start_agent_leg(now);
            return;
        }
        // Agent leg failed.
        let mapped = match status {
            486 | 600 => 486,
            603 | 403 => 603,
            488 | 606 => 488,
            _ => 480,
        };
        info!(status, mapped, "agent leg failed");
        if self.transferring && self.number_target.is_some() {
            self.number_failed(now);
            return;
        }
        if self.acd_mode && (self.phase == Phase::Ringing || self.transferring) {
            // Busy, declined or gone: the ACD offers the call to the next agent.
            if let Some(agent) = self.agent_id {
                self.withdrawn(agent, "refused");
                self.tell_acd(AcdInput::Refused {
                    call: self.id.clone(),
                    agent,
                });
            }
            return;
        }
        if self.phase == Phase::Ringing {
            self.disposition = Some(if mapped == 486 || mapped == 603 {
                Disposition::Rejected
            } else {
                Disposition::Missed
            });
            self.fail_caller(now, mapped);
            self.end(now, None);
        }
    }

    fn bye(&mut self, now: Instant, leg: LegId) {
        let me = self.cfg.me.clone();
        let bye = self.dialog(leg).request(Method::Bye, &me, None);
        self.send_client(now, bye, leg, Purpose::Bye);
    }

    /// ACKs and BYEs a 2xx we will not bridge: another fork of the agent INVITE, or an agent
    /// whose offer was withdrawn.
    fn release_dialog(&mut self, now: Instant, mut fork: Dialog, r: &Response) {
        let me = self.cfg.me.clone();
        fork.establish_from(r);
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let peer = if fork.route_set.is_empty() {
            fork.peer
        } else {
            target_peer(&fork.next_hop(), fork.peer)
        };
        let ack = fork.request(Method::Ack, &me, Some(seq));
        self.send(peer, Message::Request(ack).to_bytes());
        let bye = fork.request(Method::Bye, &me, None);
        let tx = ClientTransaction::new(now, bye, peer.transport.reliable(), self.cfg.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg: LegId::Agent,
            purpose: Purpose::Bye,
            attempt: 0,
            provisional: false,
            cancel_pending: false,
        });
        info!("extra answer released");
    }

    /// Reads the agent's SDP answer into the relay. Returns false when it is unusable.
    fn accept_agent_sdp(&mut self, body: &[u8]) -> bool {
        if self.agent_media.pending_offer.is_none() {
            return true; // already accepted (183 then 200 with the same answer)
        }
        self.apply_answer(LegId::Agent, body)
    }

    fn answer_caller(&mut self, now: Instant) {
        let tag = self.caller_leg.local_tag().to_string();
        let mut resp = self.invite.response(200, Some(&tag));
        resp.headers
            .push(HeaderName::Contact, self.caller_leg.contact(&self.cfg.me));
        resp.headers.push(HeaderName::Allow, ALLOW);
        if self.delayed_offer && self.caller_media.last_sdp.is_none() {
            // Our offer, with the agent's codec only (the relay does not transcode).
            let cm = &mut self.caller_media;
            let offer = sdp::offer(&cm.local, &[self.codec], cm.dtmf_pt, Direction::SendRecv);
            cm.last_sdp = Some(offer.to_string().into_bytes());
            cm.pending_offer = Some(offer);
            self.ack_answer_awaited = true;
        }
        if let Some(terms) = self.session_terms[LegId::Caller.index()] {
            resp.headers
                .push(HeaderName::SessionExpires, terms.answer_value());
            if terms.peer_supports {
                resp.headers.push(HeaderName::Require, "timer");
            }
            self.session[LegId::Caller.index()] = Some(SessionTimer::new(now, terms));
        }
        if let Some(body) = self.caller_media.last_sdp.clone() {
            resp = resp.with_body("application/sdp", body);
        }
        self.respond_invite(now, resp);
        if std::mem::take(&mut self.queue_music_on) {
            self.media(MediaCommand::StopPlaying(LegId::Caller));
        }
        self.phase = Phase::Up;
        self.ring_deadline = None;
        self.final_status = 200;
        self.disposition = Some(Disposition::Answered);
        self.answered_at = Some(now);
        if let Some(agent) = self.agent_id {
            self.agents_had.push((agent, now, None));
        }
        let wall = self.wall(now);
        info!("answered");
        if let (true, Some(agent)) = (self.acd_mode, self.agent_id) {
            self.tell_acd(AcdInput::Answered {
                call: self.id.clone(),
                agent,
            });
            self.note_agent(agent);
        }
        self.publish(Event::new(Payload::CallAnswered(CallAnswered {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: self.agent_id,
            queue_id: self.queue.as_ref().map(|q| q.0),
            answered_at: crate::time::rfc3339(wall),
        })));
        self.media(MediaCommand::Watch(self.media_watch()));
        // A provisional record beside the recording, written before it starts (so the final
        // record always lands after it): if screenpop dies mid-call, the restart repairs the
        // WAV and completes this record from it.
        let record = Box::new(self.record(now, false));
        self.out.push_back(Output::Record {
            record,
            date: civil_date(wall),
            answered: now,
        });
    }

    /// A request from the desktop or the API (see [`Control`]). The answer comes out as
    /// [`Output::Reply`] with `token`: at once, or, for a hold or resume that re-INVITEs the
    /// agent's phone, when the phone has answered (a refusal leaves the call as it was).
    pub fn handle_control(&mut self, now: Instant, token: u64, by: Controller, control: Control) {
        match self.control(now, token, by, control) {
            Ok(true) => self.reply(token, Ok(())),
            Ok(false) => {}
            Err(e) => self.reply(token, Err(e)),
        }
        self.pump(now);
    }

    /// Carries out `control`; true when it is done, false when the answer waits for the phone.
    fn control(
        &mut self,
        now: Instant,
        token: u64,
        by: Controller,
        control: Control,
    ) -> Result<bool, ControlError> {
        if control == Control::Shutdown {
            self.shut_down(now);
            return Ok(true);
        }
        let mine = by.supervisor || (by.agent.is_some() && by.agent == self.agent_id);
        // A call being offered (first, or after a transfer) is not the agent's until answered.
        let offered = self.phase == Phase::Ringing || (self.transferring && !self.agent_answered);
        if self.phase == Phase::Ended || !mine || (offered && !by.supervisor) {
            // A call being offered is not the agent's until answered (they answer on the phone).
            return Err(ControlError::NotFound);
        }
        if self.phase != Phase::Up {
            return Err(ControlError::Conflict("the call is not answered yet"));
        }
        if self.survey.is_some() {
            // The agent is gone; the caller answers the survey alone. A supervisor may end it.
            if !by.supervisor {
                return Err(ControlError::NotFound);
            }
            if control != Control::Hangup {
                return Err(ControlError::Conflict(
                    "the caller is answering the post-call survey",
                ));
            }
        }
        if self.control_pending.is_some() && control != Control::Hangup {
            return Err(ControlError::Conflict(
                "another request on this call is in progress",
            ));
        }
        if self.transferring && control != Control::Hangup {
            return Err(ControlError::Conflict(
                "a transfer of this call is in progress",
            ));
        }
        let consult_control = matches!(
            control,
            Control::Hangup | Control::CompleteTransfer | Control::CancelTransfer
        );
        if self.consult.is_some() && !consult_control {
            return Err(ControlError::Conflict(
                "an attended transfer is in progress: complete or cancel it",
            ));
        }
        match control {
            Control::Hangup => {
                info!("hung up from the desktop");
                self.hung_up_from_desk = true;
                if by.agent.is_some() && by.agent == self.agent_id && self.survey_due() {
                    // The agent hangs up first from the desktop: their phone's leg ends and
                    // the caller is asked the survey, as when they put the phone down.
                    self.bye(now, LegId::Agent);
                    self.start_survey(now);
                } else {
                    self.hang_up(now, None);
                }
                Ok(true)
            }
            Control::Shutdown => Ok(true), // taken above, in any phase
            Control::Hold => {
                if self.hold.is_some() {
                    return Err(ControlError::Conflict("the call is on hold already"));
                }
                if self.offer_open(LegId::Agent) {
                    return Err(ControlError::Conflict("the phone is being re-INVITEd"));
                }
                // The music starts at once; the desktops hear of the hold when the phone took it.
                self.start_hold(now, HoldBy::Desk);
                if self.hold_agent_phone(now, token, Control::Hold, Direction::SendOnly) {
                    return Ok(false);
                }
                self.publish_hold(now, HoldBy::Desk, true);
                Ok(true)
            }
            Control::Transfer(to) => {
                self.transfer(now, to)?;
                Ok(true)
            }
            Control::Consult(to) => self.start_consult(token, to),
            Control::CompleteTransfer => self.complete_transfer(now).map(|()| true),
            Control::CancelTransfer => self.cancel_transfer(now).map(|()| true),
            Control::Resume => {
                let Some(hold) = self.hold else {
                    return Err(ControlError::Conflict("the call is not on hold"));
                };
                if hold.by == HoldBy::Phone {
                    return Err(ControlError::Conflict(
                        "the phone holds the call: resume it on the phone",
                    ));
                }
                if self.offer_open(LegId::Agent) {
                    return Err(ControlError::Conflict("the phone is being re-INVITEd"));
                }
                // A caller that holds us keeps the agent's phone held (mirrored).
                let dir = if self.held[LegId::Caller.index()] {
                    Direction::SendOnly
                } else {
                    Direction::SendRecv
                };
                if self.hold_agent_phone(now, token, Control::Resume, dir) {
                    return Ok(false);
                }
                self.end_hold(now);
                Ok(true)
            }
        }
    }

    /// A REFER from the agent's phone (its transfer button): a blind transfer, the same as
    /// from the desktop, so the two never disagree. 202 at once with a NOTIFY `100 Trying`
    /// (RFC 3515); the target is looked up by the task; the final NOTIFY says how it went.
    fn on_refer(&mut self, now: Instant, req: Request, tag: &str) {
        let target = req
            .headers
            .get(&HeaderName::ReferTo)
            .and_then(|v| NameAddr::parse(v, "Refer-To").ok());
        let refusal = if self.phase != Phase::Up || !self.agent_answered {
            Some((403, "the call is not up"))
        } else if !self.acd_mode {
            Some((403, "calls on this trunk ring a fixed phone"))
        } else if self.transferring
            || self.refer_pending
            || self.control_pending.is_some()
            || self.consult.is_some()
        {
            Some((491, "a transfer or hold is in progress"))
        } else if target.is_none() {
            Some((400, "missing or malformed Refer-To"))
        } else {
            None
        };
        if let Some((status, why)) = refusal {
            info!(status, why, "REFER refused");
            let mut r = req.response(status, Some(tag));
            r.headers
                .push(HeaderName::Warning, format!("399 screenpop \"{why}\""));
            self.respond_last(now, r);
            return;
        }
        let Some(target) = target else { return };
        info!(to = %target.uri, "REFER from the phone");
        self.refer_id = req.cseq().map(|c| c.seq).unwrap_or(0);
        self.respond_last(now, req.response(202, Some(tag)));
        // The 202 is on the wire before the first NOTIFY.
        self.flush_last();
        self.refer_pending = true;
        self.notify_refer(now, "100 Trying", false);
        self.out.push_back(Output::Refer { target: target.uri });
    }

    /// The task's answer to [`Output::Refer`].
    pub fn handle_refer(&mut self, now: Instant, target: Result<TransferTo, ReferRefused>) {
        if !std::mem::take(&mut self.refer_pending) || self.phase != Phase::Up {
            self.pump(now);
            return;
        }
        self.refer_pending = true;
        let failed = match target {
            Ok(to) => match self.transfer(now, to) {
                Ok(()) => None,
                Err(e) => {
                    info!(error = %e, "REFER not carried out");
                    Some("503 Service Unavailable")
                }
            },
            Err(ReferRefused::Unknown) => {
                info!("REFER to nobody screenpop knows");
                Some("404 Not Found")
            }
        };
        if let Some(status) = failed {
            self.refer_pending = false;
            if self.agent_answered {
                self.notify_refer(now, status, true);
            } else {
                // The phone hung up after its REFER and the transfer cannot be made: nobody
                // is left for the caller.
                self.hang_up(now, None);
            }
        }
        self.pump(now);
    }

    /// A NOTIFY of the REFER's progress on the agent's leg (`status` as a sipfrag status line).
    fn notify_refer(&mut self, now: Instant, status: &str, last: bool) {
        let me = self.cfg.me.clone();
        let mut n = self.agent_leg.request(Method::Notify, &me, None);
        n.headers
            .push(HeaderName::Event, format!("refer;id={}", self.refer_id));
        n.headers.push(
            HeaderName::Other("Subscription-State".into()),
            if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            },
        );
        n.headers
            .push(HeaderName::Contact, self.agent_leg.contact(&me));
        n.headers
            .push(HeaderName::ContentType, "message/sipfrag;version=2.0");
        n.body = format!("SIP/2.0 {status}\r\n").into_bytes();
        self.send_client(now, n, LegId::Agent, Purpose::Notify);
    }

    /// A blind transfer: the agent's phone is hung up, the caller hears music, and the ACD
    /// offers the call to the target (then, should the target not take it, to the queue).
    fn transfer(&mut self, now: Instant, to: TransferTo) -> Result<(), ControlError> {
        if !self.acd_mode && !matches!(to, TransferTo::Number(_)) {
            return Err(ControlError::Conflict(
                "calls on this trunk ring a fixed phone: there is no queue to transfer through",
            ));
        }
        if self.transferring {
            return Err(ControlError::Conflict(
                "a transfer of this call is in progress",
            ));
        }
        if self.offer_open(LegId::Agent) {
            return Err(ControlError::Conflict("the phone is being re-INVITEd"));
        }
        let from = self.agent_id;
        let (queue, target, number) = match &to {
            TransferTo::Agent(a) if Some(*a) == from => {
                return Err(ControlError::Conflict(
                    "the call is with that agent already",
                ));
            }
            TransferTo::Agent(a) => (self.queue.as_ref().map(|q| q.0), Some(*a), None),
            TransferTo::Queue(q) => (Some(*q), None, None),
            TransferTo::Number(gw) => (self.queue.as_ref().map(|q| q.0), None, Some(gw.clone())),
        };
        if queue.is_none() && number.is_none() {
            return Err(ControlError::Conflict("the call is in no queue"));
        }
        info!(?from, to = ?to, "blind transfer");
        if let Some(hold) = self.hold.take() {
            // The hold ends here; the music plays on for the transfer, and the next phone
            // hears the caller.
            if let Some(span) = self.hold_span(hold, now) {
                self.holds.push(span);
            }
            self.media(MediaCommand::Hush(LegId::Agent, false));
        }
        if std::mem::take(&mut self.refer_pending) && self.agent_answered {
            // The phone asked for it: tell it the transfer is done before its leg ends.
            self.notify_refer(now, "200 OK", true);
        }
        if self.agent_answered {
            self.bye(now, LegId::Agent);
        }
        self.agent_answered = false;
        self.close_agent_span(now);
        // The first phone's dialog is over (its hold button finds a stale leg); the next phone
        // gets a leg of its own.
        self.retire_agent_leg();
        self.transferring = true;
        self.on_hold = true;
        self.media(MediaCommand::Watch(self.media_watch()));
        self.media(MediaCommand::Play(LegId::Caller, Music::Hold));
        let to_queue = queue.filter(|_| matches!(to, TransferTo::Queue(_)));
        let to_number = number.as_ref().map(|g| g.number.clone());
        self.publish_transferred(now, from, (target, to_queue, to_number));
        self.agent_id = None;
        match (number, queue) {
            (Some(gw), _) => {
                if self.routed {
                    // The first agent is done with the call (wrap-up); the ACD has no part in
                    // ringing an outside number, but keeps the call should it come back.
                    self.tell_acd(AcdInput::AgentLeft {
                        call: self.id.clone(),
                    });
                }
                self.ring_number(now, gw);
            }
            (None, Some(queue)) => self.tell_acd(AcdInput::Transfer {
                call: self.id.clone(),
                queue,
                to: target,
            }),
            (None, None) => {}
        }
        Ok(())
    }

    /// `call.transferred` to the desktops of `from`, who handed the caller to (an agent, a
    /// queue, a number).
    fn publish_transferred(
        &mut self,
        now: Instant,
        from: Option<AgentId>,
        (to_agent_id, to_queue_id, to_number): (Option<AgentId>, Option<QueueId>, Option<String>),
    ) {
        self.publish(Event::new(Payload::CallTransferred(CallTransferred {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: from,
            to_agent_id,
            to_queue_id,
            to_number,
            at: crate::time::rfc3339(self.wall(now)),
        })));
    }

    /// Rings an outside number through the gateway on a fresh agent leg, presenting the
    /// profile's caller ID; the caller hears music until it answers.
    fn ring_number(&mut self, now: Instant, gw: Box<Gateway>) {
        let presented = CallerId {
            raw: gw.caller_id.clone(),
            number: Some(gw.caller_id.clone()),
            name: None,
            withheld: false,
        };
        let target = AgentTarget {
            uri: gw.uri.clone(),
            peer: Some(gw.peer),
        };
        let (leg, _) = agent_dialog(
            &self.cfg.me,
            &mut self.rng,
            &presented,
            &target,
            self.caller_leg.peer,
        );
        self.agent_leg = leg;
        // Gateways take RTP/AVP: no SRTP offer, whatever `agent_srtp` says for phones.
        self.agent_plain_only = true;
        self.agent_min_se = None;
        self.agent_answered = false;
        self.agent_ack = None;
        self.agent_auth = None;
        self.gateway_tries = 0;
        self.agent_call_ids.push(self.agent_leg.call_id.clone());
        self.out.push_back(Output::Listen {
            call_id: self.agent_leg.call_id.clone(),
        });
        self.agent_uri = Some(gw.uri.clone());
        self.media(MediaCommand::SignallingIp(LegId::Agent, gw.peer.addr.ip()));
        self.ring_deadline = Some(now + gw.ring_timeout);
        info!(number = %gw.number, "transfer out through the gateway");
        self.number_target = Some(gw);
        self.start_agent_leg(now);
    }

    /// The outside number did not take the transferred caller (refused, no answer, no
    /// response): back into the call's queue, ahead of new callers, or hung up without one.
    fn number_failed(&mut self, now: Instant) {
        self.number_target = None;
        self.ring_deadline = None;
        // A 2xx crossing our CANCEL belongs to an old attempt: ACKed and released, not bridged.
        self.shelve_agent_leg();
        self.agent_media.pending_offer = None;
        match self.queue.as_ref().map(|q| q.0) {
            Some(queue) if self.acd_mode => {
                info!("the outside number did not answer: back into the queue");
                self.tell_acd(AcdInput::Transfer {
                    call: self.id.clone(),
                    queue,
                    to: None,
                });
            }
            _ => {
                info!("the outside number did not answer: hanging up");
                self.hang_up(now, None);
            }
        }
    }

    /// The transfer's target answered: the caller hears them.
    fn transfer_answered(&mut self, now: Instant, r: &Response) {
        if !self.accept_agent_sdp(&r.body) {
            warn!("transfer target answered without a usable SDP answer");
            self.bye(now, LegId::Agent);
            self.agent_answered = false;
            if let Some(agent) = self.agent_id {
                self.tell_acd(AcdInput::Refused {
                    call: self.id.clone(),
                    agent,
                });
            }
            return;
        }
        self.agent_session(now, r);
        self.transferring = false;
        self.media(MediaCommand::StopPlaying(LegId::Caller));
        self.on_hold = self.held.iter().any(|h| *h);
        self.media(MediaCommand::Watch(self.media_watch()));
        info!(agent = ?self.agent_id, "transfer answered");
        // A caller hold that came during the transfer reaches the new phone now.
        if let Some(d) = self.mirror_deferred[LegId::Agent.index()] {
            self.mirror_to(now, LegId::Agent, d);
        }
        if let Some(agent) = self.agent_id {
            self.tell_acd(AcdInput::Answered {
                call: self.id.clone(),
                agent,
            });
            self.note_agent(agent);
            self.agents_had.push((agent, now, None));
        }
        self.publish(Event::new(Payload::CallAnswered(CallAnswered {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: self.agent_id,
            queue_id: self.queue.as_ref().map(|q| q.0),
            answered_at: crate::time::rfc3339(self.wall(now)),
        })));
    }

    /// The agent who had the call leaves it now.
    fn close_agent_span(&mut self, now: Instant) {
        if let Some(last) = self.agents_had.last_mut() {
            if last.2.is_none() {
                last.2 = Some(now);
            }
        }
    }

    /// The agents so far, one still on the call ending at `now`.
    fn agent_spans(&self, now: Instant) -> Vec<AgentSpan> {
        let Some(answered) = self.answered_at else {
            return Vec::new();
        };
        let ms = |t: Instant| t.saturating_duration_since(answered).as_millis() as u64;
        self.agents_had
            .iter()
            .map(|(agent, from, to)| AgentSpan {
                agent_id: *agent,
                start_ms: ms(*from),
                end_ms: ms(to.unwrap_or(now)),
            })
            .collect()
    }

    /// An agent's phone is being rung for the call: before the answer, or for a transfer.
    fn ringing_an_agent(&self) -> bool {
        (self.phase == Phase::Ringing && self.invite_pending()) || self.transferring
    }

    /// Offers `dir` to the agent's phone unless it has it already; true when a re-INVITE went
    /// out and `token` waits for its answer.
    fn hold_agent_phone(
        &mut self,
        now: Instant,
        token: u64,
        control: Control,
        dir: Direction,
    ) -> bool {
        if self.local_dir[LegId::Agent.index()] == dir {
            return false;
        }
        self.control_pending = Some((token, control));
        self.mirror_to(now, LegId::Agent, dir);
        true
    }

    /// The agent's phone answered our hold or resume re-INVITE with `status`.
    fn settle_control(&mut self, now: Instant, status: u16) {
        if status < 200 {
            return;
        }
        let Some((token, control)) = self.control_pending.take() else {
            return;
        };
        let ok = status / 100 == 2;
        match (control, ok) {
            (Control::Hold, true) => self.publish_hold(now, HoldBy::Desk, true),
            // The phone stays as it was: so does the caller.
            (Control::Hold, false) => self.drop_hold(now, false),
            (Control::Resume, true) => self.end_hold(now),
            (Control::Resume, false)
            | (Control::Hangup, _)
            | (Control::Shutdown, _)
            | (Control::Transfer(_), _)
            | (Control::Consult(_), _)
            | (Control::CompleteTransfer, _)
            | (Control::CancelTransfer, _) => {}
        }
        let result = if ok {
            Ok(())
        } else {
            Err(ControlError::PhoneRefused(status))
        };
        self.reply(token, result);
    }

    /// The caller hears music; the desktops hear of it.
    fn start_hold(&mut self, now: Instant, by: HoldBy) {
        info!(by = by.as_str(), "on hold");
        self.hold = Some(Hold { by, since: now });
        self.on_hold = true;
        self.media(MediaCommand::Watch(self.media_watch()));
        self.media(MediaCommand::Play(LegId::Caller, Music::Hold));
        self.media(MediaCommand::Hush(LegId::Agent, true));
        if by == HoldBy::Phone {
            self.publish_hold(now, by, true);
        }
    }

    /// The caller hears the agent again.
    fn end_hold(&mut self, now: Instant) {
        self.drop_hold(now, true);
    }

    /// Ends the hold; `happened` keeps it in the record and tells the desktops (a hold the
    /// phone refused never happened).
    fn drop_hold(&mut self, now: Instant, happened: bool) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        if self.consult.is_none() {
            // (During a consultation the caller keeps the music.)
            self.media(MediaCommand::StopPlaying(LegId::Caller));
        }
        self.media(MediaCommand::Hush(LegId::Agent, false));
        self.on_hold = self.held.iter().any(|h| *h) || self.transferring || self.consult.is_some();
        self.media(MediaCommand::Watch(self.media_watch()));
        if happened {
            info!("resumed");
            if let Some(span) = self.hold_span(hold, now) {
                self.holds.push(span);
            }
            self.publish_hold(now, hold.by, false);
        } else {
            info!("hold undone: the phone refused it");
        }
    }

    fn publish_hold(&mut self, now: Instant, by: HoldBy, held: bool) {
        let hold = CallHold {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: self.agent_id,
            by: by.as_str(),
            at: crate::time::rfc3339(self.wall(now)),
        };
        self.publish(Event::new(if held {
            Payload::CallHeld(hold)
        } else {
            Payload::CallResumed(hold)
        }));
    }

    fn hold_span(&self, hold: Hold, end: Instant) -> Option<HoldSpan> {
        let answered = self.answered_at?;
        let ms = |t: Instant| t.saturating_duration_since(answered).as_millis() as u64;
        Some(HoldSpan {
            start_ms: ms(hold.since),
            end_ms: ms(end),
            by: hold.by.as_str().to_string(),
        })
    }

    /// The holds so far, one still running ending at `now`.
    fn hold_spans(&self, now: Instant) -> Vec<HoldSpan> {
        let mut spans = self.holds.clone();
        spans.extend(self.hold.and_then(|h| self.hold_span(h, now)));
        spans
    }

    fn reply(&mut self, token: u64, result: Result<(), ControlError>) {
        self.out.push_back(Output::Reply { token, result });
    }

    /// The agent hangs up now and the caller would be asked the queue's survey: the call is
    /// up with the agent alone (no transfer, consultation or outside number in progress) and
    /// the caller's leg is confirmed.
    fn survey_due(&self) -> bool {
        self.phase == Phase::Up
            && self.survey_setup.is_some()
            && self.survey.is_none()
            // An agent of ours: not an outside party an attended transfer handed the call to.
            && self.agent_id.is_some()
            && self.agent_answered
            && !self.transferring
            && self.consult.is_none()
            && !self.refer_pending
            && self.number_target.is_none()
            && !self.caller_ack_awaited()
    }

    /// The agent's leg is over (its BYE sent or answered): the agent goes to wrap-up, the
    /// desktops hear that the caller is asked, and the prompt plays.
    fn start_survey(&mut self, now: Instant) {
        let Some(setup) = self.survey_setup.clone() else {
            return;
        };
        info!("the agent hung up first: the caller is asked the survey");
        // A hold the phone had not confirmed yet never happened.
        let mut unconfirmed = false;
        if let Some((token, control)) = self.control_pending.take() {
            unconfirmed = control == Control::Hold;
            self.reply(token, Err(ControlError::NotFound));
        }
        if let Some(hold) = self.hold.take() {
            if let Some(span) = self.hold_span(hold, now).filter(|_| !unconfirmed) {
                self.holds.push(span);
            }
        }
        self.agent_answered = false;
        self.close_agent_span(now);
        self.retire_agent_leg();
        if self.routed {
            self.tell_acd(AcdInput::AgentLeft {
                call: self.id.clone(),
            });
        }
        // Neither side hears the other: the agent's phone is gone, and the caller hears only
        // the survey. The agent's leg falls silent, so silence is no longer watched.
        self.media(MediaCommand::Hush(LegId::Agent, true));
        self.media(MediaCommand::Hush(LegId::Caller, true));
        self.media(MediaCommand::Watch(None));
        let (survey, step) = Survey::start(now, setup);
        self.survey = Some(survey);
        self.publish_survey(now, "asking");
        self.survey_step(now, Some(step));
    }

    /// A key the caller pressed (RFC 4733 or SIP INFO): the survey's digit, if it runs.
    fn survey_digit(&mut self, now: Instant, digit: char) {
        if self.phase != Phase::Up {
            return;
        }
        let step = self.survey.as_mut().and_then(|s| s.on_digit(now, digit));
        if step.is_some() {
            info!(%digit, "survey answered");
        }
        self.survey_step(now, step);
    }

    fn survey_step(&mut self, now: Instant, step: Option<SurveyStep>) {
        match step {
            Some(SurveyStep::Play(clip)) => {
                self.media(MediaCommand::PlayOnce(LegId::Caller, clip));
            }
            Some(SurveyStep::HangUp) => self.hang_up(now, None),
            None => {}
        }
    }

    /// The call ends with a survey running: it stops, and the desktops hear how it went.
    fn close_survey(&mut self, now: Instant) {
        let Some(s) = self.survey.as_mut() else {
            return;
        };
        s.abandon();
        let state = if s.score().is_some() {
            "scored"
        } else {
            "unanswered"
        };
        self.publish_survey(now, state);
    }

    fn publish_survey(&mut self, now: Instant, state: &'static str) {
        let score = self.survey.as_ref().and_then(Survey::score);
        self.publish(Event::new(Payload::CallSurvey(CallSurvey {
            call_id: self.id.clone(),
            contact_log_id: self.found.log_id,
            agent_id: self.agent_id,
            queue_id: self.queue.as_ref().map(|q| q.0),
            state,
            score,
            at: crate::time::rfc3339(self.wall(now)),
        })));
    }

    /// The call's record as of `now`.
    fn record(&self, now: Instant, complete: bool) -> CallRecord {
        CallRecord {
            id: self.id.clone(),
            call_id: SipCallId::new(self.caller_leg.call_id.clone()),
            // A leg retired for the survey keeps its Call-ID in the record.
            agent_call_id: SipCallId::new(if self.agent_leg.call_id.is_empty() {
                self.agent_call_ids.last().cloned().unwrap_or_default()
            } else {
                self.agent_leg.call_id.clone()
            }),
            trunk: self.trunk.clone(),
            caller: self.caller.clone(),
            dialed: self.dialed.clone(),
            agent: self.agent_uri.as_ref().map(|u| u.to_string()),
            agent_id: self.agent_id,
            queue_id: self.queue.as_ref().map(|q| q.0),
            disposition: self.disposition.unwrap_or(Disposition::Failed),
            final_status: self.final_status,
            offered_at_ms: epoch_ms(self.wall0),
            answered_at_ms: self.answered_at.map(|a| epoch_ms(self.wall(a))),
            ended_at_ms: epoch_ms(self.wall(now)),
            duration_ms: self
                .answered_at
                .map(|a| now.saturating_duration_since(a).as_millis() as u64)
                .unwrap_or(0),
            ended_by: if self.hung_up_from_desk {
                Some(EndedBy::Desk)
            } else if self.survey.is_some() {
                // The agent hung up first; the survey ended the caller's side.
                Some(EndedBy::Agent)
            } else {
                self.ended_by.map(EndedBy::from)
            },
            path: None,
            sha256: None,
            recording_duration_ms: None,
            size_bytes: None,
            dtmf: Vec::new(),
            holds: self.hold_spans(now),
            agents: self.agent_spans(now),
            media: None,
            rtp_timeout: self.rtp_timeout,
            session_expired: self.session_expired,
            caller_e164: self.found.e164.clone(),
            customer_id: self.found.customer_id,
            candidates: self.found.candidates.clone(),
            log_id: self.found.log_id,
            outbound: false,
            complete,
            survey: self.survey.as_ref().map(|s| SurveyRecord {
                offered_at_ms: epoch_ms(self.wall(s.started())),
                score: s.score(),
            }),
        }
    }

    fn fail_caller(&mut self, now: Instant, status: u16) {
        if self.invite_pending() {
            let tag = self.caller_leg.local_tag().to_string();
            let resp = self.invite.response(status, Some(&tag));
            self.respond_invite(now, resp);
            self.final_status = status;
        }
    }

    /// CANCELs the agent leg if it is still ringing (RFC 3261 §9.1: only after a provisional).
    fn cancel_agent(&mut self, now: Instant) {
        if self.agent_answered {
            return;
        }
        // The latest INVITE of the attempt: a retry (after 422 or 488) follows a finished one.
        let Some(i) = self.clients.iter().rposition(|c| {
            c.purpose == Purpose::AgentInvite
                && c.attempt == self.attempt
                && matches!(c.tx.state(), ClientState::Calling | ClientState::Proceeding)
        }) else {
            return;
        };
        if self.clients[i].provisional {
            self.send_cancel(now, i);
        } else {
            self.clients[i].cancel_pending = true;
        }
    }

    /// Sends the CANCEL for the agent INVITE of client `i`.
    fn send_cancel(&mut self, now: Instant, i: usize) {
        let inv = &self.clients[i].tx.request;
        let (peer, attempt) = (self.clients[i].peer, self.clients[i].attempt);
        let cancel = super::dialog::cancel_of(inv);
        // The CANCEL goes where the INVITE went (RFC 3261 §9.1).
        let tx = ClientTransaction::new(now, cancel, peer.transport.reliable(), self.cfg.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg: LegId::Agent,
            purpose: Purpose::Cancel,
            attempt,
            provisional: false,
            cancel_pending: false,
        });
    }

    fn on_client_timeout(&mut self, now: Instant, leg: LegId, purpose: Purpose) {
        match purpose {
            Purpose::AgentInvite if self.transferring && self.number_target.is_some() => {
                info!("the gateway does not answer");
                self.number_failed(now);
            }
            Purpose::AgentInvite
                if self.acd_mode && (self.phase == Phase::Ringing || self.transferring) =>
            {
                info!("agent phone unreachable");
                if let Some(agent) = self.agent_id {
                    self.withdrawn(agent, "unreachable");
                    self.tell_acd(AcdInput::Refused {
                        call: self.id.clone(),
                        agent,
                    });
                }
            }
            Purpose::AgentInvite if self.phase == Phase::Ringing => {
                info!("agent phone unreachable");
                self.disposition = Some(Disposition::Missed);
                self.fail_caller(now, 480);
                self.end(now, None);
            }
            Purpose::ReInvite | Purpose::Refresh => {
                warn!(?leg, "re-INVITE timed out; ending call");
                self.hang_up(now, None);
            }
            _ => {}
        }
    }

    /// screenpop is shutting down and the drain is over: the call ends whatever its phase. A
    /// caller not answered yet gets 503 (RFC 3261 §21.5.4: the PBX or a load balancer may try
    /// another node), a phone still ringing its CANCEL, the others their BYE.
    fn shut_down(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        info!("hung up: screenpop is shutting down");
        self.cancel_agent(now);
        self.end_with(now, None, 503);
    }

    /// Ends the call: BYE to every established leg other than `by` (which sent its own BYE).
    fn hang_up(&mut self, now: Instant, by: Option<LegId>) {
        self.end_with(now, by, 480);
    }

    /// [`Call::hang_up`], a caller not answered yet getting `status`.
    fn end_with(&mut self, now: Instant, by: Option<LegId>, status: u16) {
        if self.phase == Phase::Ended {
            return;
        }
        // Before the answer the caller's INVITE still needs its final response (also when its
        // 2xx was held for a PRACK: then there is no dialog to BYE).
        let confirmed = !self.invite_pending();
        self.fail_caller(now, status);
        if by != Some(LegId::Caller) && self.phase == Phase::Up && confirmed {
            if self.caller_ack_awaited() {
                self.caller_bye_deferred = true;
            } else {
                self.bye(now, LegId::Caller);
            }
        }
        if by != Some(LegId::Agent) && self.agent_answered {
            self.bye(now, LegId::Agent);
        }
        if self.transferring {
            // The transfer's target is still ringing.
            self.cancel_agent(now);
        }
        self.end(now, by);
    }

    fn end(&mut self, now: Instant, by: Option<LegId>) {
        if self.phase == Phase::Ended {
            return;
        }
        if let Some((token, _)) = self.control_pending.take() {
            self.reply(token, Err(ControlError::NotFound));
        }
        self.end_consultation(now);
        self.close_survey(now);
        self.phase = Phase::Ended;
        self.ended_by = by;
        self.ended_at = Some(now);
        self.ring_deadline = None;
        // Keep absorbing retransmissions for a while, but never forever.
        self.linger_until = Some(now + LINGER);
        // Media stops and the contact log is written at hang-up, not when the last
        // transaction ends; without the lookup's contact log row it waits for that.
        if self.lookup == Lookup::Done {
            self.report_end();
        }
    }

    /// The record of the end, once, followed by the ACD's word.
    fn report_end(&mut self) {
        let Some(at) = self.ended_at.filter(|_| !self.end_reported) else {
            return;
        };
        self.end_reported = true;
        let record = Box::new(self.record(at, true));
        self.out.push_back(Output::Ended { record, at });
        if self.routed {
            let call = self.id.clone();
            self.tell_acd(if self.answered_at.is_some() && !self.transferring {
                AcdInput::Ended { call }
            } else {
                AcdInput::Abandoned { call }
            });
        }
    }
}

fn new_tag(rng: &mut StdRng) -> String {
    format!("{:016x}", rng.gen::<u64>())
}

/// A fresh agent-leg dialog towards `agent` (new Call-ID and tag), and whether its host name
/// must be resolved first. The peer of a host-named target is a placeholder until then.
fn agent_dialog(
    me: &LocalContact,
    rng: &mut StdRng,
    caller: &CallerId,
    agent: &AgentTarget,
    fallback: Peer,
) -> (Dialog, bool) {
    // RFC 3263 §4.1: a target without a transport parameter is UDP (TLS for `sips:`), however
    // the caller reached us.
    let udp = Peer {
        transport: Transport::Udp,
        ..fallback
    };
    let peer = agent.peer.unwrap_or_else(|| target_peer(&agent.uri, udp));
    let needs_dns = agent.peer.is_none()
        && agent
            .uri
            .host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_err();
    let user = caller
        .number
        .clone()
        .unwrap_or_else(|| "anonymous".to_string());
    let mut from = NameAddr::new(Uri::sip(Some(&user), &me.host, None));
    from.display = caller.name.clone();
    from.set_param("tag", Some(&new_tag(rng)));
    let dialog = Dialog {
        call_id: format!("{:032x}@{}", rng.gen::<u128>(), me.host),
        local: from,
        remote: NameAddr::new(agent.uri.clone()),
        remote_target: agent.uri.clone(),
        route_set: Vec::new(),
        local_cseq: 0,
        remote_cseq: None,
        secure: agent.uri.scheme == "sips" && peer.transport == Transport::Tls,
        peer,
    };
    (dialog, needs_dns)
}

#[cfg(test)]
mod tests {
    //! Each call flow fed byte for byte on fake time; `tests/call_sim.rs` runs whole calls over
    //! a lossy network.
    use super::*;
    use crate::acd::runtime::AgentOffer;
    use std::sync::Arc;

    const TRUNK: &str = "10.0.0.1:5060";
    const PHONE: &str = "10.0.0.10:5060";

    fn peer(a: &str) -> Peer {
        Peer {
            addr: a.parse().expect("address"),
            transport: Transport::Udp,
        }
    }

    fn sdp(ip: &str, port: u16) -> String {
        format!(
            "v=0\r\no=t 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        )
    }

    fn request(text: &str) -> Message {
        Message::parse(text.as_bytes()).expect("test message")
    }

    /// A trunk request in the caller's dialog (after the INVITE, with screenpop's To tag).
    fn trunk(method: &str, cseq: u32, branch: &str, to_tag: Option<&str>) -> Message {
        let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        request(&format!(
            "{method} sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+8613800138000@10.0.0.1>;tag=t1\r\n\
             To: <sip:100@10.0.0.2>{tag}\r\nCall-ID: unit@10.0.0.1\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n"
        ))
    }

    fn invite() -> Request {
        invite_with(&sdp("10.0.0.1", 40000))
    }

    /// The trunk's INVITE with `body` (empty: a delayed offer).
    fn invite_with(body: &str) -> Request {
        invite_full("", body)
    }

    /// The trunk's INVITE with `extra` header lines and `body`.
    fn invite_full(extra: &str, body: &str) -> Request {
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let text = format!(
            "INVITE sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKinv1\r\n\
             Max-Forwards: 70\r\nFrom: \"Ann\" <sip:+8613800138000@10.0.0.1>;tag=t1\r\n\
             To: <sip:100@10.0.0.2>\r\nCall-ID: unit@10.0.0.1\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:trunk@{TRUNK}>\r\n{extra}{ct}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match request(&text) {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    fn start(fixed_agent: bool) -> (Call, Instant) {
        start_with(invite(), fixed_agent, vec![Codec::Pcmu])
    }

    fn start_with(invite: Request, fixed_agent: bool, codecs: Vec<Codec>) -> (Call, Instant) {
        start_from(invite, fixed_agent, codecs, peer(TRUNK))
    }

    /// As [`start_with`], the INVITE having come from `from`.
    fn start_from(
        invite: Request,
        fixed_agent: bool,
        codecs: Vec<Codec>,
        from: Peer,
    ) -> (Call, Instant) {
        let t0 = Instant::now();
        let cfg = Arc::new(CallConfig {
            me: LocalContact {
                host: "10.0.0.2".into(),
                port: 5060,
                tls_port: None,
            },
            media_ip: "10.0.0.2".parse().expect("ip"),
            codecs,
            timers: TimerConfig::default(),
            ring_timeout: Duration::from_secs(20),
            rtp_timeout: Some(Duration::from_secs(30)),
            min_se_secs: 90,
            session_expires_secs: 1800,
            agent_srtp: AgentSrtp::Tls,
            queue_music: false,
        });
        let init = CallInit {
            id: "c1".into(),
            offer: screen(&invite, 90).expect("screened"),
            invite,
            peer: from,
            received: t0,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            caller: crate::sip::caller_id::CallerId {
                raw: "<sip:+8613800138000@10.0.0.1>".into(),
                number: Some("+8613800138000".into()),
                name: None,
                withheld: false,
            },
            trunk: "t".into(),
            agent: fixed_agent.then(|| AgentTarget {
                uri: Uri::parse(&format!("sip:agent@{PHONE}")).expect("uri"),
                peer: Some(peer(PHONE)),
            }),
            caller_port: 30000,
            agent_port: 30002,
            seed: 1,
        };
        (Call::new(cfg, init).expect("call"), t0)
    }

    /// What the call asked for, as short strings: "tx 10.0.0.1:5060 SIP/2.0 100 Trying",
    /// "publish call.offered", "lookup", "route", "acd Answered", "record", "ended Answered".
    fn drain(c: &mut Call) -> (Vec<String>, Vec<(Peer, Message)>) {
        let mut said = Vec::new();
        let mut sent = Vec::new();
        while let Some(o) = c.poll_output() {
            said.push(match o {
                Output::Transmit { peer, bytes } => {
                    let m = Message::parse(&bytes).expect("we send what we parse");
                    let line = String::from_utf8_lossy(&bytes)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    sent.push((peer, m));
                    format!("tx {} {line}", peer.addr)
                }
                Output::Publish(e) => format!("publish {}", e.kind),
                Output::Lookup { .. } => "lookup".into(),
                Output::Route { .. } => "route".into(),
                Output::Acd(i) => {
                    format!("acd {}", format!("{i:?}").split(' ').next().unwrap_or(""))
                }
                Output::Listen { .. } => "listen".into(),
                Output::Resolve { .. } => "resolve".into(),
                Output::NoteAgent { .. } => "note agent".into(),
                Output::Media(m) => {
                    format!("media {}", format!("{m:?}").split('(').next().unwrap_or(""))
                }
                Output::Record { .. } => "record".into(),
                Output::Ended { record, .. } => format!("ended {:?}", record.disposition),
                Output::Reply { result, .. } => format!("reply {result:?}"),
                Output::Refer { target } => format!("refer {target}"),
                Output::Consult { key, .. } => format!("consult {key}"),
            });
        }
        (said, sent)
    }

    fn found() -> CallerLookup {
        CallerLookup {
            log_id: Some(ContactLogId::new(9)),
            ..CallerLookup::default()
        }
    }

    fn offer(agent: AgentId) -> Decision {
        Decision::Offer(Box::new(AgentOffer {
            agent,
            display_name: "Bo".into(),
            target: AgentTarget {
                uri: Uri::parse(&format!("sip:agent@{PHONE}")).expect("uri"),
                peer: Some(peer(PHONE)),
            },
        }))
    }

    /// The first 200 among `sent`.
    fn first_ok(sent: &[(Peer, Message)]) -> Response {
        sent.iter()
            .find_map(|(_, m)| match m {
                Message::Response(r) if r.status == 200 => Some(r.clone()),
                _ => None,
            })
            .expect("a 200")
    }

    /// The first INVITE among what was sent (the agent leg's, or a re-INVITE).
    fn agent_invite(sent: &[(Peer, Message)]) -> Request {
        request_in(sent, Method::Invite)
    }

    /// The first `method` request among what was sent.
    fn request_in(sent: &[(Peer, Message)], method: Method) -> Request {
        sent.iter()
            .find_map(|(_, m)| match m {
                Message::Request(r) if r.method == method => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a {method} among {} sent", sent.len()))
    }

    /// A call in the ACD whose agent's phone has just been sent its INVITE.
    fn offered_to_agent() -> (Call, Instant, Request) {
        let (mut c, t0) = start(false);
        drain(&mut c);
        c.handle_lookup(t0, found());
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        (c, t0, inv)
    }

    /// The agent's phone answers its INVITE with `status` (no body).
    fn phone_says(c: &mut Call, at: Instant, inv: &Request, status: u16) {
        let r = inv.response(status, Some("ptag"));
        c.handle_message(at, Message::Response(r), peer(PHONE));
    }

    fn answer(inv: &Request) -> Message {
        let mut r = inv.response(200, Some("ptag"));
        r.headers
            .push(HeaderName::Contact, format!("<sip:agent@{PHONE}>"));
        Message::Response(r.with_body("application/sdp", sdp("10.0.0.10", 42000).into_bytes()))
    }

    /// A call in the ACD rung and answered; returns the agent's INVITE.
    fn answered() -> (Call, Instant, Request) {
        let (mut c, t0, inv) = offered_to_agent();
        phone_says(&mut c, t0, &inv, 180);
        c.handle_message(t0 + Duration::from_secs(2), answer(&inv), peer(PHONE));
        drain(&mut c);
        (c, t0, inv)
    }

    fn has(said: &[String], what: &str) -> bool {
        said.iter().any(|s| s.contains(what))
    }

    /// Runs the clock until the call lets go; how long that took.
    fn run_out(c: &mut Call, from: Instant) -> Duration {
        let mut now = from;
        while !c.is_done(now) {
            now = c
                .poll_timeout()
                .expect("a call that is not done has a timer");
            c.handle_timeout(now);
            drain(c);
        }
        now - from
    }

    #[test]
    fn a_new_call_says_trying_and_asks_who_is_calling() {
        let (mut c, _) = start(false);
        let (said, _) = drain(&mut c);
        assert_eq!(
            said,
            [
                "media SetRemote",
                "media SignallingIp",
                "tx 10.0.0.1:5060 SIP/2.0 100 Trying",
                "lookup"
            ]
        );
    }

    #[test]
    fn the_caller_hears_ringback_while_the_acd_finds_an_agent() {
        let (mut c, t0) = start(false);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 180 Ringing", "route"]);
        c.handle_decision(
            t0,
            Decision::Queued {
                queue: 1,
                name: "General".into(),
                crm_url: Some("https://crm.example/c?phone={e164}&call={call_id}".into()),
                music: None,
                survey: None,
            },
        );
        assert_eq!(drain(&mut c).0, ["publish call.queued"]);
        c.handle_decision(t0, offer(4));
        let (said, sent) = drain(&mut c);
        assert_eq!(
            said,
            [
                "listen",
                "media SignallingIp",
                "publish call.offered",
                "note agent",
                "tx 10.0.0.10:5060 INVITE sip:agent@10.0.0.10:5060 SIP/2.0",
            ]
        );
        let inv = agent_invite(&sent);
        assert_eq!(inv.headers.get_named("X-Screenpop-Call"), Some("c1"));
        assert!(c
            .call_ids()
            .contains(&inv.call_id().unwrap_or_default().to_string()));
    }

    #[test]
    fn the_agents_answer_answers_the_caller_and_starts_the_recording() {
        let (mut c, t0, inv) = offered_to_agent();
        c.handle_message(t0, answer(&inv), peer(PHONE));
        let (said, sent) = drain(&mut c);
        assert_eq!(
            said,
            [
                "tx 10.0.0.10:5060 ACK sip:agent@10.0.0.10:5060 SIP/2.0",
                "media SetRemote",
                "tx 10.0.0.1:5060 SIP/2.0 200 OK",
                "acd Answered",
                "note agent",
                "publish call.answered",
                "media Watch",
                "record",
            ]
        );
        let ok = sent
            .iter()
            .find_map(|(p, m)| match m {
                Message::Response(r) if r.status == 200 => Some((p, r.clone())),
                _ => None,
            })
            .expect("200 to the caller");
        assert_eq!(ok.0.addr.to_string(), TRUNK);
        let body = SessionDescription::parse(&ok.1.body).expect("our answer");
        assert!(body.to_string().contains("m=audio 30000 "), "{body}");
    }

    /// An INVITE without SDP (RFC 3261 §13.2.1): the agent is offered every codec we take,
    /// its answer picks one, our 200 offers the caller that one, and the ACK's answer sets the
    /// caller's media.
    fn delayed_offer_answered() -> (Call, Instant, Response) {
        let (mut c, t0) = start_with(invite_with(""), false, vec![Codec::Pcma, Codec::Pcmu]);
        let (said, _) = drain(&mut c);
        assert!(
            !has(&said, "media SetRemote"),
            "no caller media yet: {said:?}"
        );
        c.handle_lookup(t0, found());
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        let to_agent = String::from_utf8_lossy(&inv.body).to_string();
        assert!(
            to_agent.contains("RTP/AVP 8 0 101"),
            "the agent is offered every codec: {to_agent}"
        );
        // The phone takes PCMU.
        c.handle_message(t0, answer(&inv), peer(PHONE));
        let (said, sent) = drain(&mut c);
        assert_eq!(
            said.iter().filter(|s| *s == "media SetRemote").count(),
            1,
            "the agent's media only: {said:?}"
        );
        let ok = first_ok(&sent);
        let ours = String::from_utf8_lossy(&ok.body).to_string();
        assert!(
            ours.contains("m=audio 30000 RTP/AVP 0 101\r\n") && ours.contains("a=sendrecv"),
            "our offer in the 200 has the agent's codec only: {ours}"
        );
        (c, t0, ok)
    }

    #[test]
    fn a_delayed_offer_is_made_in_our_200_and_answered_in_the_ack() {
        let (mut c, t0, ok) = delayed_offer_answered();
        let tag = c.caller_leg.local_tag().to_string();
        let Message::Request(mut ack) = trunk("ACK", 1, "z9hG4bKack", Some(&tag)) else {
            unreachable!()
        };
        let body = sdp("10.0.0.1", 40000).into_bytes();
        ack.headers.set(HeaderName::ContentType, "application/sdp");
        ack.headers
            .set(HeaderName::ContentLength, body.len().to_string());
        ack.body = body;
        c.handle_message(
            t0 + Duration::from_millis(100),
            Message::Request(ack),
            peer(TRUNK),
        );
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["media SetRemote"], "the caller's media from the ACK");
        assert_eq!(c.phase, Phase::Up);
        // A retransmitted 200 (lost ACK) would repeat the same offer.
        assert_eq!(c.caller_media.last_sdp.as_deref(), Some(&ok.body[..]));
    }

    #[test]
    fn a_delayed_offer_whose_ack_has_no_answer_is_hung_up() {
        let (mut c, t0, _) = delayed_offer_answered();
        let tag = c.caller_leg.local_tag().to_string();
        let t = t0 + Duration::from_millis(100);
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(
            has(&said, "tx 10.0.0.10:5060 BYE"),
            "the agent's leg: {said:?}"
        );
        assert!(
            has(&said, "tx 10.0.0.1:5060 BYE"),
            "the caller's leg: {said:?}"
        );
        assert!(!has(&said, "media SetRemote"), "{said:?}");
    }

    /// A call in the ACD answered by the agent after an INVITE with `extra` headers; returns
    /// the 200 sent to the caller and the agent's INVITE.
    fn answered_with(extra: &str) -> (Call, Instant, Response, Request) {
        let invite = invite_full(extra, &sdp("10.0.0.1", 40000));
        let (mut c, t0) = start_with(invite, false, vec![Codec::Pcmu]);
        drain(&mut c);
        c.handle_lookup(t0, found());
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        c.handle_message(t0, answer(&inv), peer(PHONE));
        let (_, sent) = drain(&mut c);
        let ok = first_ok(&sent);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t0, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        (c, t0, ok, inv)
    }

    /// The caller's re-INVITE refreshing the session (same SDP, RFC 4028 §7.4).
    fn caller_refresh(c: &Call, cseq: u32, extra: &str) -> Message {
        let tag = c.caller_leg.local_tag().to_string();
        let body = sdp("10.0.0.1", 40000);
        request(&format!(
            "INVITE sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKref{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+8613800138000@10.0.0.1>;tag=t1\r\n\
             To: <sip:100@10.0.0.2>;tag={tag}\r\nCall-ID: unit@10.0.0.1\r\nCSeq: {cseq} INVITE\r\n\
             Contact: <sip:trunk@{TRUNK}>\r\n{extra}Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    #[test]
    fn a_session_the_caller_refreshes_ends_when_it_stops() {
        let (mut c, t0, ok, _) =
            answered_with("Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n");
        assert_eq!(
            ok.headers.get(&HeaderName::SessionExpires),
            Some("90;refresher=uac")
        );
        assert_eq!(ok.headers.get(&HeaderName::Require), Some("timer"));
        // The refresh at 40 s: answered with the interval, not mirrored to the agent.
        let t = t0 + Duration::from_secs(40);
        let se = "Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n";
        c.handle_message(t, caller_refresh(&c, 2, se), peer(TRUNK));
        let (said, sent) = drain(&mut c);
        assert!(!has(&said, "tx 10.0.0.10:5060 INVITE"), "{said:?}");
        let refreshed = first_ok(&sent);
        assert_eq!(
            refreshed.headers.get(&HeaderName::SessionExpires),
            Some("90;refresher=uac")
        );
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("ACK", 2, "z9hG4bKack2", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        // No refresh since: the session ends 90 − 30 s after the last one, BYE both ways.
        let quiet = t + Duration::from_secs(59);
        c.handle_timeout(quiet);
        assert!(!has(&drain(&mut c).0, "BYE"), "not yet");
        c.handle_timeout(t + Duration::from_secs(60));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.1:5060 BYE"), "{said:?}");
        assert!(has(&said, "tx 10.0.0.10:5060 BYE"), "{said:?}");
        let record = c.record(t + Duration::from_secs(60), true);
        assert!(record.session_expired && record.ended_by.is_none());
        assert_eq!(record.disposition, Disposition::Answered);
    }

    #[test]
    fn we_refresh_a_session_when_the_caller_does_not_support_timers() {
        let (mut c, t0, ok, _) = answered_with("Session-Expires: 120\r\n");
        assert_eq!(
            ok.headers.get(&HeaderName::SessionExpires),
            Some("120;refresher=uas")
        );
        assert_eq!(ok.headers.get(&HeaderName::Require), None);
        c.handle_timeout(t0 + Duration::from_secs(60));
        let (_, sent) = drain(&mut c);
        let refresh = sent
            .iter()
            .find_map(|(p, m)| match m {
                Message::Request(r) if r.method == Method::Invite => Some((p, r.clone())),
                _ => None,
            })
            .expect("our refresh re-INVITE");
        assert_eq!(refresh.0.addr.to_string(), TRUNK);
        assert_eq!(
            refresh.1.headers.get(&HeaderName::SessionExpires),
            Some("120;refresher=uac"),
            "in our refresh we are the UAC, and still the refresher"
        );
        assert!(String::from_utf8_lossy(&refresh.1.body).contains("m=audio 30000 "));
        // The caller answers: the timer restarts from there.
        let t = t0 + Duration::from_secs(61);
        let mut r = refresh.1.response(200, Some("t1"));
        r.headers
            .push(HeaderName::Contact, format!("<sip:trunk@{TRUNK}>"));
        let r = r.with_body("application/sdp", sdp("10.0.0.1", 40000).into_bytes());
        c.handle_message(t, Message::Response(r), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.1:5060 ACK"), "{said:?}");
        let timer = c.session[0].as_ref().expect("timed");
        assert_eq!(
            timer.deadline(),
            t + Duration::from_secs(60),
            "next refresh"
        );
    }

    /// As UAC on the agent's leg: the INVITE asks for a session interval, and a phone that
    /// makes us the refresher is refreshed at half of it (RFC 4028 §7).
    #[test]
    fn the_agents_leg_is_refreshed_when_its_phone_makes_us_the_refresher() {
        let (mut c, t0, inv) = offered_to_agent();
        assert_eq!(inv.headers.get(&HeaderName::SessionExpires), Some("1800"));
        assert_eq!(inv.headers.get(&HeaderName::Supported), Some("timer"));
        let Message::Response(mut ok) = answer(&inv) else {
            unreachable!()
        };
        ok.headers
            .push(HeaderName::SessionExpires, "90;refresher=uac");
        ok.headers.push(HeaderName::Require, "timer");
        c.handle_message(t0, Message::Response(ok), peer(PHONE));
        drain(&mut c);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t0, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        c.handle_timeout(t0 + Duration::from_secs(44));
        assert!(!has(&drain(&mut c).0, "INVITE"), "not before half");
        c.handle_timeout(t0 + Duration::from_secs(45));
        let (_, sent) = drain(&mut c);
        let refresh = sent
            .iter()
            .find_map(|(p, m)| match m {
                Message::Request(r) if r.method == Method::Invite => Some((p, r.clone())),
                _ => None,
            })
            .expect("a refresh to the phone");
        assert_eq!(refresh.0.addr.to_string(), PHONE);
        assert_eq!(
            refresh.1.headers.get(&HeaderName::SessionExpires),
            Some("90;refresher=uac")
        );
    }

    #[test]
    fn a_session_interval_below_min_se_gets_422() {
        let invite = invite_full("Session-Expires: 30\r\n", &sdp("10.0.0.1", 40000));
        let refusal = screen(&invite, 90).expect_err("too short");
        assert_eq!(refusal.status, 422);
        let r = refusal_response(&invite, refusal, "x", 90);
        assert_eq!(r.headers.get(&HeaderName::MinSe), Some("90"));
    }

    #[test]
    fn an_update_refreshes_and_one_with_an_offer_is_answered_and_mirrored() {
        let (mut c, t0, _, _) =
            answered_with("Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n");
        let tag = c.caller_leg.local_tag().to_string();
        let update = |cseq: u32, extra: &str, body: &str| {
            let ct = if body.is_empty() {
                ""
            } else {
                "Content-Type: application/sdp\r\n"
            };
            request(&format!(
                "UPDATE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKup{cseq}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:+8613800138000@10.0.0.1>;tag=t1\r\n\
                 To: <sip:100@10.0.0.2>;tag={tag}\r\nCall-ID: unit@10.0.0.1\r\nCSeq: {cseq} UPDATE\r\n\
                 Contact: <sip:trunk@{TRUNK}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        let t = t0 + Duration::from_secs(40);
        c.handle_message(
            t,
            update(
                2,
                "Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n",
                "",
            ),
            peer(TRUNK),
        );
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 200 OK"]);
        let timer = c.session[0].as_ref().expect("timed");
        assert_eq!(
            timer.deadline(),
            t + Duration::from_secs(60),
            "expiry moved"
        );
        // An UPDATE putting the agent on hold: answered recvonly, mirrored as a re-INVITE.
        let held = sdp("10.0.0.1", 40000).replace("a=sendrecv", "a=sendonly");
        c.handle_message(t, update(3, "", &held), peer(TRUNK));
        let (_, sent) = drain(&mut c);
        let ok = first_ok(&sent);
        assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
        let mirrored = agent_invite(&sent);
        assert!(String::from_utf8_lossy(&mirrored.body).contains("a=sendonly"));
    }

    #[test]
    fn the_callers_bye_ends_both_legs_and_writes_one_record() {
        let (mut c, t0, _) = answered();
        let t = t0 + Duration::from_secs(3);
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack1", Some("x")), peer(TRUNK));
        // The ACK above carries another To tag: not ours, so the 2xx is still unacknowledged.
        let tag = {
            let (_, sent) = drain(&mut c);
            assert!(sent.is_empty());
            c.caller_leg.local_tag().to_string()
        };
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack2", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.1:5060 SIP/2.0 200 OK"), "{said:?}");
        assert!(has(&said, "ended Answered"), "{said:?}");
        assert!(has(&said, "acd Ended"), "{said:?}");
        let bye = sent
            .iter()
            .find_map(|(p, m)| match m {
                Message::Request(r) if r.method == Method::Bye => {
                    Some((p.addr.to_string(), r.clone()))
                }
                _ => None,
            })
            .expect("a BYE to the agent");
        assert_eq!(bye.0, PHONE);
        // A retransmitted BYE gets the same 200 and ends nothing twice.
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 200 OK"]);
        c.handle_message(t, Message::Response(bye.1.response(200, None)), peer(PHONE));
        let took = run_out(&mut c, t);
        assert!(took <= Duration::from_secs(40), "{took:?}");
    }

    #[test]
    fn no_bye_to_the_caller_before_it_acked_our_answer() {
        let (mut c, t0, inv) = answered();
        let t = t0 + Duration::from_secs(3);
        // The agent hangs up; the caller's ACK has not arrived (RFC 3261 §15).
        let bye = request(&format!(
            "BYE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKpb\r\n\
             From: <sip:agent@10.0.0.10>;tag=ptag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default()
        ));
        c.handle_message(t, bye, peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 SIP/2.0 200 OK"), "{said:?}");
        assert!(has(&said, "ended Answered"), "{said:?}");
        assert!(!has(&said, "BYE"), "no BYE before the ACK: {said:?}");
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert_eq!(
            said,
            ["tx 10.0.0.1:5060 BYE sip:trunk@10.0.0.1:5060 SIP/2.0"]
        );
    }

    #[test]
    fn a_cancel_before_the_answer_is_an_abandoned_call() {
        let (mut c, t0, inv) = offered_to_agent();
        phone_says(&mut c, t0, &inv, 180);
        drain(&mut c);
        c.handle_message(t0, trunk("CANCEL", 1, "z9hG4bKinv1", None), peer(TRUNK));
        let (said, _) = drain(&mut c);
        let pos = |what: &str| said.iter().position(|s| s.contains(what));
        // 200 for the CANCEL first, then 487 for the INVITE (RFC 3261 §9.2).
        assert!(pos("SIP/2.0 200 OK") < pos("487"), "{said:?}");
        assert!(has(&said, "CANCEL sip:agent@"), "{said:?}");
        assert!(has(&said, "ended Abandoned"), "{said:?}");
        assert!(has(&said, "acd Abandoned"), "{said:?}");
    }

    /// A caller who gives up while the agent's phone rings: once the phone has said 487 and
    /// the caller has ACKed ours, the task goes at once (it used to stay for Timer D, 32 s)
    /// and leaves the dispatcher the ACK for repeats of the phone's 487.
    #[test]
    fn an_abandoned_call_leaves_the_ack_of_the_phones_487_not_its_task() {
        let (mut c, t0, inv) = offered_to_agent();
        phone_says(&mut c, t0, &inv, 180);
        drain(&mut c);
        c.handle_message(t0, trunk("CANCEL", 1, "z9hG4bKinv1", None), peer(TRUNK));
        let (_, sent) = drain(&mut c);
        let cancel = request_in(&sent, Method::Cancel);
        c.handle_message(
            t0,
            Message::Response(cancel.response(200, Some("ptag"))),
            peer(PHONE),
        );
        phone_says(&mut c, t0, &inv, 487);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t0, trunk("ACK", 1, "z9hG4bKinv1", Some(&tag)), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "ACK sip:agent@"), "the 487 ACKed: {said:?}");
        let t = t0 + Duration::from_millis(10);
        assert!(c.is_done(t), "nothing but its remains is left");
        let branch = inv.top_via().unwrap().branch().unwrap().to_string();
        let remains = c.remains();
        assert!(
            remains.iter().any(|(r, p)| matches!(r,
                Remains::Reack { branch: b, ack, until }
                    if *b == branch && ack.starts_with(b"ACK ") && *until > t)
                && *p == peer(PHONE)),
            "{remains:?}"
        );
    }

    #[test]
    fn the_end_waits_for_the_contact_log_row() {
        let (mut c, t0) = start(false);
        drain(&mut c);
        // The caller gives up while the store is still looking the caller up.
        c.handle_message(t0, trunk("CANCEL", 1, "z9hG4bKinv1", None), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "487"), "{said:?}");
        assert!(!has(&said, "ended"), "{said:?}");
        assert!(!c.is_done(t0 + Duration::from_secs(3600)));
        c.handle_lookup(t0, found());
        let mut said = Vec::new();
        while let Some(o) = c.poll_output() {
            if let Output::Ended { record, .. } = o {
                said.push((record.disposition, record.log_id));
            } else if let Output::Route { .. } = o {
                panic!("a call that ended is not routed");
            }
        }
        assert_eq!(said, [(Disposition::Abandoned, Some(ContactLogId::new(9)))]);
    }

    #[test]
    fn a_fixed_agent_that_never_answers_is_a_missed_call() {
        let (mut c, t0) = start(true);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        phone_says(&mut c, t0, &inv, 180);
        drain(&mut c);
        let mut now = t0;
        let mut said = Vec::new();
        while !has(&said, "ended") {
            now = c.poll_timeout().expect("the ring timeout");
            c.handle_timeout(now);
            said.extend(drain(&mut c).0);
        }
        assert_eq!(now - t0, Duration::from_secs(20));
        assert!(has(&said, "CANCEL sip:agent@"), "{said:?}");
        assert!(has(&said, "SIP/2.0 480"), "{said:?}");
        assert!(has(&said, "ended Missed"), "{said:?}");
    }

    #[test]
    fn a_busy_agent_hands_the_call_back_to_the_acd() {
        let (mut c, t0, inv) = offered_to_agent();
        phone_says(&mut c, t0, &inv, 486);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "ACK sip:agent@"), "{said:?}");
        assert!(has(&said, "publish call.withdrawn"), "{said:?}");
        assert!(has(&said, "acd Refused"), "{said:?}");
        assert!(!has(&said, "ended"), "the caller still waits: {said:?}");
    }

    #[test]
    fn a_second_fork_answering_is_acked_and_released() {
        let (mut c, t0, inv) = answered();
        let mut fork = inv.response(200, Some("other"));
        fork.headers
            .push(HeaderName::Contact, format!("<sip:agent@{PHONE}>"));
        let fork = fork.with_body("application/sdp", sdp("10.0.0.10", 42002).into_bytes());
        c.handle_message(
            t0 + Duration::from_secs(2),
            Message::Response(fork),
            peer(PHONE),
        );
        let (said, sent) = drain(&mut c);
        assert_eq!(said.len(), 2, "{said:?}");
        for (_, m) in &sent {
            let Message::Request(r) = m else {
                panic!("{said:?}")
            };
            assert_eq!(
                r.to().and_then(|t| t.tag().map(str::to_string)).as_deref(),
                Some("other")
            );
        }
        assert!(has(&said, "ACK") && has(&said, "BYE"), "{said:?}");
    }

    /// Two INVITEs never overlap on the caller's dialog (RFC 3261 §14.1): a hold from the
    /// agent before the caller has ACKed our 200 reaches the caller after the ACK.
    /// The agent's phone re-INVITEs with `dir` (its hold or resume button), CSeq `cseq`.
    fn phone_reinvite(inv: &Request, cseq: u32, dir: &str) -> Message {
        let body = sdp("10.0.0.10", 42000).replace("sendrecv", dir);
        request(&format!(
            "INVITE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKph{cseq}\r\n\
             From: <sip:agent@10.0.0.10>;tag=ptag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} INVITE\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default(),
            body.len()
        ))
    }

    /// The phone's hold button puts the caller on music (no re-INVITE to the trunk, whose
    /// gateway would otherwise play its own idea of hold) and tells the desktop; its resume
    /// button takes the music away.
    #[test]
    fn the_phones_hold_button_plays_music_to_the_caller_and_tells_the_desktop() {
        let (mut c, t0, inv) = answered();
        let t = t0 + Duration::from_secs(3);
        c.handle_message(t, phone_reinvite(&inv, 5, "sendonly"), peer(PHONE));
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 SIP/2.0 200 OK"), "{said:?}");
        assert!(String::from_utf8_lossy(&first_ok(&sent).body).contains("a=recvonly"));
        assert!(has(&said, "media Play"), "{said:?}");
        assert!(has(&said, "publish call.held"), "{said:?}");
        assert!(!has(&said, "tx 10.0.0.1:5060 INVITE"), "{said:?}");
        // The desktop cannot resume a hold the phone holds: they would disagree.
        let agent = Controller {
            agent: Some(4),
            supervisor: false,
        };
        c.handle_control(t, 1, agent, Control::Resume);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "reply Err(Conflict"), "{said:?}");
        let t2 = t + Duration::from_secs(5);
        c.handle_message(t2, phone_reinvite(&inv, 6, "sendrecv"), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "media StopPlaying"), "{said:?}");
        assert!(has(&said, "publish call.resumed"), "{said:?}");
        let rec = c.record(t2, false);
        assert_eq!(
            rec.holds,
            vec![HoldSpan {
                start_ms: 1000,
                end_ms: 6000,
                by: "phone".into()
            }]
        );
    }

    /// The desk's hold: music at once, the phone held by re-INVITE (sendonly), the answer
    /// when the phone took it; resume re-INVITEs sendrecv and stops the music.
    #[test]
    fn a_hold_from_the_desk_holds_the_phone_and_the_music_stops_on_resume() {
        let (mut c, t0, _) = answered();
        let t = t0 + Duration::from_secs(3);
        let agent = Controller {
            agent: Some(4),
            supervisor: false,
        };
        c.handle_control(t, 7, agent, Control::Hold);
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "media Play"), "{said:?}");
        assert!(!has(&said, "reply"), "waits for the phone: {said:?}");
        assert!(
            !has(&said, "call.held"),
            "not before the phone took it: {said:?}"
        );
        let reinv = agent_invite(&sent);
        assert!(String::from_utf8_lossy(&reinv.body).contains("a=sendonly"));
        // A second request meanwhile is refused.
        c.handle_control(t, 8, agent, Control::Resume);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "reply Err(Conflict"), "{said:?}");
        let ok = reinv.response(200, Some("ptag")).with_body(
            "application/sdp",
            sdp("10.0.0.10", 42000)
                .replace("sendrecv", "recvonly")
                .into_bytes(),
        );
        c.handle_message(t, Message::Response(ok), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 ACK"), "{said:?}");
        assert!(has(&said, "publish call.held"), "{said:?}");
        assert!(has(&said, "reply Ok(())"), "{said:?}");
        // Resume.
        let t2 = t + Duration::from_secs(2);
        c.handle_control(t2, 9, agent, Control::Resume);
        let (_, sent) = drain(&mut c);
        let reinv = agent_invite(&sent);
        assert!(String::from_utf8_lossy(&reinv.body).contains("a=sendrecv"));
        let ok = reinv
            .response(200, Some("ptag"))
            .with_body("application/sdp", sdp("10.0.0.10", 42000).into_bytes());
        c.handle_message(t2, Message::Response(ok), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "media StopPlaying"), "{said:?}");
        assert!(has(&said, "publish call.resumed"), "{said:?}");
        assert!(has(&said, "reply Ok(())"), "{said:?}");
        assert_eq!(c.record(t2, false).holds.len(), 1);
    }

    /// A phone that refuses the hold (488) leaves the call as it was: music off, no event,
    /// the answer says so, and the next hold may try again.
    #[test]
    fn a_phone_that_refuses_the_hold_leaves_the_call_as_it_was() {
        let (mut c, t0, _) = answered();
        let t = t0 + Duration::from_secs(3);
        let sup = Controller {
            agent: Some(1),
            supervisor: true,
        };
        c.handle_control(t, 1, sup, Control::Hold);
        let (_, sent) = drain(&mut c);
        let reinv = agent_invite(&sent);
        c.handle_message(
            t,
            Message::Response(reinv.response(488, Some("ptag"))),
            peer(PHONE),
        );
        let (said, _) = drain(&mut c);
        assert!(has(&said, "media StopPlaying"), "{said:?}");
        assert!(has(&said, "reply Err(PhoneRefused(488))"), "{said:?}");
        assert!(!has(&said, "publish"), "{said:?}");
        assert!(c.hold.is_none() && c.record(t, false).holds.is_empty());
        c.handle_control(t, 2, sup, Control::Hold);
        let (said, _) = drain(&mut c);
        assert!(
            has(&said, "tx 10.0.0.10:5060 INVITE"),
            "tried again: {said:?}"
        );
    }

    /// A shutdown ends any call, from no desktop: a phone still ringing gets its CANCEL and
    /// the caller 503 (another node may take the call); an answered call a BYE both ways.
    #[test]
    fn a_shutdown_ends_the_call_whatever_its_phase() {
        let server = Controller {
            agent: None,
            supervisor: true,
        };
        let (mut c, t0, inv) = offered_to_agent();
        phone_says(&mut c, t0, &inv, 180);
        drain(&mut c);
        let t = t0 + Duration::from_secs(1);
        c.handle_control(t, 1, server, Control::Shutdown);
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 CANCEL"), "{said:?}");
        assert!(has(&said, "reply Ok(())"), "{said:?}");
        let to_caller: Vec<u16> = sent
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Response(r) if r.status >= 200 => Some(r.status),
                _ => None,
            })
            .collect();
        assert_eq!(to_caller, [503], "{said:?}");
        assert!(!has(&said, "BYE"), "no dialog to end: {said:?}");
        assert_eq!(c.phase, Phase::Ended);
        assert!(!c.settled(), "the CANCEL is not answered yet");
        let cancel = sent
            .iter()
            .find_map(|(_, m)| match m {
                Message::Request(r) if r.method == Method::Cancel => Some(r.clone()),
                _ => None,
            })
            .expect("the CANCEL");
        let t = t + Duration::from_millis(20);
        let ok = cancel.response(200, Some("ptag"));
        c.handle_message(t, Message::Response(ok), peer(PHONE));
        phone_says(&mut c, t, &inv, 487);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKinv1", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        assert!(
            c.settled(),
            "CANCEL and INVITE answered, the 503 acknowledged"
        );

        let (mut c, t0, _) = answered();
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t0, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        let t = t0 + Duration::from_secs(5);
        c.handle_control(t, 1, server, Control::Shutdown);
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 BYE"), "{said:?}");
        assert!(has(&said, "tx 10.0.0.1:5060 BYE"), "{said:?}");
        assert!(!has(&said, "CANCEL"), "{said:?}");
        assert_eq!(c.phase, Phase::Ended);
        let byes: Vec<(Peer, Request)> = sent
            .into_iter()
            .filter_map(|(p, m)| match m {
                Message::Request(r) if r.method == Method::Bye => Some((p, r)),
                _ => None,
            })
            .collect();
        assert_eq!(byes.len(), 2, "{said:?}");
        for (i, (to, bye)) in byes.iter().enumerate() {
            assert!(!c.settled(), "BYE {i} not answered yet");
            let ok = bye.response(200, None);
            c.handle_message(t + Duration::from_millis(30), Message::Response(ok), *to);
            drain(&mut c);
        }
        assert!(c.settled(), "both BYEs answered");
    }

    /// Another agent's desktop cannot control the call (404, as if it did not exist); an
    /// offer still ringing is not the agent's yet; the desk's hang-up BYEs both legs.
    #[test]
    fn only_the_agent_with_the_call_or_a_supervisor_controls_it() {
        let (mut c, t0, inv) = offered_to_agent();
        let mine = Controller {
            agent: Some(4),
            supervisor: false,
        };
        c.handle_control(t0, 1, mine, Control::Hangup);
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["reply Err(NotFound)"]);
        c.handle_message(t0 + Duration::from_secs(1), answer(&inv), peer(PHONE));
        drain(&mut c);
        let other = Controller {
            agent: Some(5),
            supervisor: false,
        };
        let t = t0 + Duration::from_secs(4);
        c.handle_control(t, 2, other, Control::Hold);
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["reply Err(NotFound)"]);
        c.handle_control(t, 3, mine, Control::Hangup);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 BYE"), "{said:?}");
        assert!(
            has(&said, "tx 10.0.0.1:5060 BYE") || c.caller_bye_deferred,
            "{said:?}"
        );
        assert!(has(&said, "reply Ok(())"), "{said:?}");
        assert_eq!(c.record(t, true).ended_by, Some(EndedBy::Desk));
    }

    /// A blind transfer: the first phone gets a BYE, the caller music, the ACD the transfer;
    /// the target is rung on a new leg with the call's codec only, and its answer brings the
    /// caller back to talking; the record lists both agents.
    #[test]
    fn a_blind_transfer_hangs_up_the_first_phone_and_bridges_the_target() {
        let (mut c, t0, _) = answered();
        c.queue = Some((1, "General".into()));
        let t = t0 + Duration::from_secs(10);
        let alice = Controller {
            agent: Some(4),
            supervisor: false,
        };
        c.handle_control(t, 1, alice, Control::Transfer(TransferTo::Agent(4)));
        assert!(
            has(&drain(&mut c).0, "reply Err(Conflict"),
            "not to oneself"
        );
        c.handle_control(t, 2, alice, Control::Transfer(TransferTo::Agent(5)));
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.10:5060 BYE",
            "media Play",
            "publish call.transferred",
            "acd Transfer",
            "reply Ok(())",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        // The transfer is the first agent's last word on the call.
        c.handle_control(t, 3, alice, Control::Hangup);
        assert!(has(&drain(&mut c).0, "reply Err(NotFound)"));
        c.handle_decision(t, offer(5));
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "publish call.offered"), "{said:?}");
        let inv = agent_invite(&sent);
        assert!(String::from_utf8_lossy(&inv.body).contains("RTP/AVP 0 101"));
        let t2 = t + Duration::from_secs(3);
        c.handle_message(t2, answer(&inv), peer(PHONE));
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.10:5060 ACK",
            "media StopPlaying",
            "acd Answered",
            "publish call.answered",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        let rec = c.record(t2 + Duration::from_secs(4), false);
        assert_eq!(rec.agent_id, Some(5));
        let spans: Vec<(i64, u64, u64)> = rec
            .agents
            .iter()
            .map(|a| (a.agent_id, a.start_ms, a.end_ms))
            .collect();
        assert_eq!(spans, [(4, 0, 8000), (5, 11_000, 15_000)]);
    }

    /// The trunk's re-INVITE with `dir` (a session refresh says sendrecv), CSeq `cseq`.
    /// A blind transfer out to a number: the phone is hung up, the gateway rung with the
    /// profile's caller ID and its 407 answered; a busy number puts the caller back in the
    /// queue (music on, the ACD told), never leaving the caller alone with music.
    #[test]
    fn a_transfer_to_a_number_rings_the_gateway_and_falls_back_to_the_queue() {
        let (mut c, t0, _) = answered();
        c.queue = Some((1, "General".into()));
        let t = t0 + Duration::from_secs(5);
        let gw = Gateway {
            number: "+12015550123".into(),
            uri: Uri::parse("sip:+12015550123@10.0.0.50:5060").unwrap(),
            peer: peer("10.0.0.50:5060"),
            credentials: Some(("acct".into(), "pw".into())),
            caller_id: "+12015550100".into(),
            ring_timeout: Duration::from_secs(60),
        };
        let alice = Controller {
            agent: Some(4),
            supervisor: false,
        };
        c.handle_control(
            t,
            1,
            alice,
            Control::Transfer(TransferTo::Number(Box::new(gw))),
        );
        let (said, sent) = drain(&mut c);
        for what in [
            "tx 10.0.0.10:5060 BYE",
            "tx 10.0.0.50:5060 INVITE sip:+12015550123@10.0.0.50:5060",
            "publish call.transferred",
            "acd AgentLeft",
            "reply Ok(())",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        let inv = last_invite(&sent, "the gateway's INVITE");
        assert!(inv
            .headers
            .get(&HeaderName::From)
            .unwrap()
            .contains("+12015550100"));
        assert!(!String::from_utf8_lossy(&inv.body).contains("crypto"));
        let mut challenge = inv.response(407, Some("gw"));
        challenge.headers.push(
            HeaderName::ProxyAuthenticate,
            "Digest realm=\"gw\", nonce=\"n1\", qop=\"auth\"",
        );
        let challenge = Message::parse(&Message::Response(challenge).to_bytes()).unwrap();
        c.handle_message(t, challenge, peer("10.0.0.50:5060"));
        let (_, sent) = drain(&mut c);
        let again = last_invite(&sent, "INVITE with credentials");
        let auth = again
            .headers
            .get(&HeaderName::ProxyAuthorization)
            .unwrap_or_default();
        assert!(auth.contains("username=\"acct\""), "{auth}");
        c.handle_message(
            t,
            Message::Response(again.response(486, Some("gw"))),
            peer("10.0.0.50:5060"),
        );
        let (said, _) = drain(&mut c);
        assert!(has(&said, "acd Transfer"), "back into the queue: {said:?}");
        assert!(!has(&said, "BYE"), "the caller stays: {said:?}");
    }

    fn phone_refer(inv: &Request, cseq: u32, to: &str) -> Message {
        request(&format!(
            "REFER sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKrf{cseq}\r\n\
             From: <sip:agent@10.0.0.10>;tag=ptag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} REFER\r\n\
             Refer-To: <{to}>\r\nContent-Length: 0\r\n\r\n",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default(),
        ))
    }

    /// The phone's transfer button (REFER) is a blind transfer like the desktop's: 202 and a
    /// NOTIFY 100 at once, the target looked up by the task, then NOTIFY 200 (terminated)
    /// before the phone's leg gets its BYE; an unknown target gets NOTIFY 404 and the call
    /// stays as it was.
    #[test]
    fn a_refer_from_the_phone_is_a_blind_transfer() {
        let (mut c, t0, inv) = answered();
        c.queue = Some((1, "General".into()));
        let t = t0 + Duration::from_secs(5);
        c.handle_message(t, phone_refer(&inv, 20, "sip:nobody@10.0.0.2"), peer(PHONE));
        let (said, _) = drain(&mut c);
        for what in [
            "10.0.0.10:5060 SIP/2.0 202",
            "tx 10.0.0.10:5060 NOTIFY",
            "refer sip:nobody@",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        let at = |what: &str| said.iter().position(|s| s.contains(what));
        assert!(
            at("SIP/2.0 202") < at("NOTIFY"),
            "202 before the NOTIFY: {said:?}"
        );
        c.handle_refer(t, Err(ReferRefused::Unknown));
        let (said, sent) = drain(&mut c);
        assert!(!has(&said, "BYE"), "{said:?}");
        let frag = sent
            .iter()
            .find_map(|(_, m)| match m {
                Message::Request(r) if r.method == Method::Notify => {
                    Some(String::from_utf8_lossy(&r.body).to_string())
                }
                _ => None,
            })
            .expect("a final NOTIFY");
        assert!(frag.starts_with("SIP/2.0 404"), "{frag}");

        c.handle_message(t, phone_refer(&inv, 21, "sip:bob@10.0.0.2"), peer(PHONE));
        drain(&mut c);
        c.handle_refer(t, Ok(TransferTo::Agent(5)));
        let (said, sent) = drain(&mut c);
        let at = |what: &str| said.iter().position(|s| s.contains(what));
        let (notify, bye) = (at("NOTIFY"), at("tx 10.0.0.10:5060 BYE"));
        assert!(
            notify.is_some() && bye.is_some() && notify < bye,
            "{said:?}"
        );
        assert!(
            has(&said, "acd Transfer") && has(&said, "publish call.transferred"),
            "{said:?}"
        );
        let done = sent.iter().find_map(|(_, m)| match m {
            Message::Request(r) if r.method == Method::Notify => Some(r.clone()),
            _ => None,
        });
        let done = done.expect("NOTIFY 200");
        assert!(String::from_utf8_lossy(&done.body).starts_with("SIP/2.0 200"));
        assert_eq!(
            done.headers.get(&HeaderName::Event),
            Some("refer;id=21"),
            "the NOTIFY names the REFER it reports on"
        );
        assert!(done
            .headers
            .get(&HeaderName::Other("Subscription-State".into()))
            .is_some_and(|v| v.starts_with("terminated")));
    }

    fn caller_reinvite(c: &Call, cseq: u32, dir: &str) -> Message {
        let tag = c.caller_leg.local_tag().to_string();
        let body = sdp("10.0.0.1", 40000).replace("sendrecv", dir);
        request(&format!(
            "INVITE sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKre{cseq}\r\n\
             From: <sip:+8613800138000@10.0.0.1>;tag=t1\r\nTo: <sip:100@10.0.0.2>;tag={tag}\r\n\
             Call-ID: unit@10.0.0.1\r\nCSeq: {cseq} INVITE\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Review findings: a trunk's session refresh (sendrecv) during a desk hold does not take
    /// the phone off hold; a phone we hold that refreshes (recvonly) is not pressing hold; the
    /// first phone's late BYE after a transfer does not end the call.
    #[test]
    fn holds_and_transfers_survive_refreshes_and_late_messages() {
        let (mut c, t0, inv) = answered();
        c.queue = Some((1, "General".into()));
        let t = t0 + Duration::from_secs(3);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        let agent = Controller {
            agent: Some(4),
            supervisor: false,
        };
        c.handle_control(t, 1, agent, Control::Hold);
        let (_, sent) = drain(&mut c);
        let reinv = agent_invite(&sent);
        let ok = reinv.response(200, Some("ptag")).with_body(
            "application/sdp",
            sdp("10.0.0.10", 42000)
                .replace("sendrecv", "recvonly")
                .into_bytes(),
        );
        c.handle_message(t, Message::Response(ok), peer(PHONE));
        drain(&mut c);
        c.handle_message(t, caller_reinvite(&c, 2, "sendrecv"), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(
            !has(&said, "tx 10.0.0.10:5060 INVITE"),
            "the refresh must not take the phone off hold: {said:?}"
        );
        // The phone refreshes while we hold it: recvonly is not its hold button.
        c.handle_message(t, phone_reinvite(&inv, 7, "recvonly"), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(!has(&said, "publish call.held"), "{said:?}");
        assert_eq!(c.hold.map(|h| h.by), Some(HoldBy::Desk));
        // A transfer while on hold; the first phone's BYE crosses ours.
        c.handle_control(t, 2, agent, Control::Transfer(TransferTo::Queue(1)));
        drain(&mut c);
        let late_bye = request(&format!(
            "BYE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKlate\r\n\
             From: <sip:agent@10.0.0.10>;tag=ptag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 9 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default(),
        ));
        c.handle_message(t, late_bye, peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 SIP/2.0 200 OK"), "{said:?}");
        assert!(
            !has(&said, "tx 10.0.0.1:5060 BYE"),
            "the caller stays: {said:?}"
        );
        assert!(c.transferring && c.phase == Phase::Up);
        // Nobody may hold the call meanwhile: the music is the transfer's.
        let sup = Controller {
            agent: Some(1),
            supervisor: true,
        };
        c.handle_control(t, 3, sup, Control::Hold);
        assert!(has(&drain(&mut c).0, "reply Err(Conflict"));
    }

    /// The caller hanging up while the transfer's target rings: the target is cancelled and
    /// the ACD hears the call was abandoned (so the target is freed).
    #[test]
    fn a_caller_leaving_during_a_transfer_cancels_the_target() {
        let (mut c, t0, _) = answered();
        let t = t0 + Duration::from_secs(10);
        let sup = Controller {
            agent: Some(1),
            supervisor: true,
        };
        c.handle_control(t, 1, sup, Control::Transfer(TransferTo::Queue(1)));
        drain(&mut c);
        c.handle_decision(t, offer(5));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        phone_says(&mut c, t, &inv, 180);
        drain(&mut c);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 CANCEL"), "{said:?}");
        assert!(has(&said, "acd Abandoned"), "{said:?}");
    }

    /// With queue music, a queued caller gets 183 with our answer and the music; the agent's
    /// ringing is not passed on (it would start the gateway's own ringback over the music);
    /// the answer stops the music.
    #[test]
    fn a_queue_with_music_of_its_own_plays_it_as_early_media_after_ringback() {
        let (mut c, t0) = start(false);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 180 Ringing", "route"]);
        let clip = std::sync::Arc::new(crate::media::music::chime());
        c.handle_decision(
            t0,
            Decision::Queued {
                queue: 1,
                name: "Sales".into(),
                crm_url: None,
                music: Some(clip),
                survey: None,
            },
        );
        let (said, sent) = drain(&mut c);
        assert_eq!(
            said,
            [
                "publish call.queued",
                "tx 10.0.0.1:5060 SIP/2.0 183 Session Progress",
                "media PlayClip"
            ]
        );
        let early = match &sent[0].1 {
            Message::Response(r) => r.clone(),
            other => panic!("{other:?}"),
        };
        assert!(String::from_utf8_lossy(&early.body).contains("m=audio"));
        // The agent's answer stops it and the 200 repeats the same answer.
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        c.handle_message(t0 + Duration::from_secs(2), answer(&inv), peer(PHONE));
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "media StopPlaying"), "{said:?}");
        let ok = first_ok(&sent);
        assert_eq!(ok.body, early.body);
    }

    #[test]
    fn queued_callers_hear_the_queue_music_as_early_media() {
        let (mut c, t0) = start(false);
        let mut cfg = (*c.cfg).clone();
        cfg.queue_music = true;
        c.cfg = Arc::new(cfg);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let (said, sent) = drain(&mut c);
        assert!(
            has(&said, "tx 10.0.0.1:5060 SIP/2.0 183 Session Progress"),
            "{said:?}"
        );
        let early = sent
            .iter()
            .find_map(|(_, m)| match m {
                Message::Response(r) if r.status == 183 => Some(r.clone()),
                _ => None,
            })
            .expect("183");
        assert!(String::from_utf8_lossy(&early.body).contains("m=audio 30000"));
        assert!(has(&said, "media Play"), "{said:?}");
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        phone_says(&mut c, t0, &inv, 180);
        let (said, _) = drain(&mut c);
        assert!(!has(&said, "180"), "{said:?}");
        c.handle_message(t0 + Duration::from_secs(2), answer(&inv), peer(PHONE));
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "media StopPlaying"), "{said:?}");
        assert_eq!(
            first_ok(&sent).body,
            early.body,
            "the 200 repeats the answer"
        );
    }

    #[test]
    fn glare_gets_491() {
        let (mut c, t0, inv) = answered();
        let tag = c.caller_leg.local_tag().to_string();
        let t = t0 + Duration::from_secs(3);
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        // The caller holds: screenpop mirrors it to the agent with its own re-INVITE...
        let body = sdp("10.0.0.1", 40000).replace("sendrecv", "sendonly");
        let hold = request(&format!(
            "INVITE sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKre\r\n\
             From: <sip:+8613800138000@10.0.0.1>;tag=t1\r\nTo: <sip:100@10.0.0.2>;tag={tag}\r\n\
             Call-ID: unit@10.0.0.1\r\nCSeq: 2 INVITE\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        c.handle_message(t, hold, peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 INVITE"), "{said:?}");
        // ...while the agent's phone sends its own: it gets 491 (RFC 3261 §14.2).
        let body = sdp("10.0.0.10", 42000);
        let theirs = request(&format!(
            "INVITE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKp2\r\n\
             From: <sip:agent@10.0.0.10>;tag=ptag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 5 INVITE\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default(),
            body.len()
        ));
        c.handle_message(t, theirs, peer(PHONE));
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.10:5060 SIP/2.0 491 Request Pending"]);
    }

    /// The trunk's PRACK for RSeq `rseq` of our INVITE's provisionals.
    fn prack(c: &Call, cseq: u32, rseq: u32) -> Message {
        let tag = c.caller_leg.local_tag().to_string();
        request(&format!(
            "PRACK sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKpr{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+8613800138000@10.0.0.1>;tag=t1\r\n\
             To: <sip:100@10.0.0.2>;tag={tag}\r\nCall-ID: unit@10.0.0.1\r\nCSeq: {cseq} PRACK\r\n\
             RAck: {rseq} 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn rseq_of(sent: &[(Peer, Message)], status: u16) -> u32 {
        sent.iter()
            .find_map(|(_, m)| match m {
                Message::Response(r) if r.status == status => {
                    assert_eq!(r.headers.get(&HeaderName::Require), Some("100rel"));
                    r.headers.get_named("RSeq").and_then(|v| v.parse().ok())
                }
                _ => None,
            })
            .expect("a reliable provisional with an RSeq")
    }

    /// A trunk asking for 100rel: the ringback 180 is retransmitted until PRACKed, the phone's
    /// 183 with early media waits its turn, and the 2xx waits for the 183's PRACK.
    #[test]
    fn reliable_provisionals_wait_for_their_prack_and_hold_the_answer() {
        let invite = invite_full("Require: 100rel\r\n", &sdp("10.0.0.1", 40000));
        let (mut c, t0) = start_with(invite, false, vec![Codec::Pcmu]);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let (said, sent) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 180 Ringing", "route"]);
        let first = rseq_of(&sent, 180);
        let t1 = TimerConfig::default().t1;
        assert_eq!(c.poll_timeout(), Some(t0 + t1));
        c.handle_timeout(t0 + t1);
        let (said, sent) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 180 Ringing"]);
        assert_eq!(
            rseq_of(&sent, 180),
            first,
            "a retransmission keeps its RSeq"
        );

        c.handle_decision(t0 + t1, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        let early = inv
            .response(183, Some("ptag"))
            .with_body("application/sdp", sdp("10.0.0.10", 42000).into_bytes());
        c.handle_message(t0 + t1, Message::Response(early), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(
            !has(&said, "183"),
            "the 183 waits for the 180's PRACK: {said:?}"
        );

        // A PRACK for an RSeq we never sent is 481 and releases nothing.
        c.handle_message(t0 + t1, prack(&c, 2, first + 7), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert_eq!(
            said,
            ["tx 10.0.0.1:5060 SIP/2.0 481 Call/Transaction Does Not Exist"]
        );

        c.handle_message(t0 + t1, prack(&c, 3, first), peer(TRUNK));
        let (said, sent) = drain(&mut c);
        assert_eq!(
            said,
            [
                "tx 10.0.0.1:5060 SIP/2.0 200 OK",
                "tx 10.0.0.1:5060 SIP/2.0 183 Session Progress"
            ]
        );
        assert_eq!(rseq_of(&sent, 183), first + 1);

        // The phone answers before the trunk PRACKed the early media: the 2xx waits.
        let t = t0 + Duration::from_secs(2);
        c.handle_message(t, answer(&inv), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(!has(&said, "tx 10.0.0.1:5060 SIP/2.0 200"), "{said:?}");
        c.handle_message(t, prack(&c, 4, first + 1), peer(TRUNK));
        let (said, sent) = drain(&mut c);
        assert_eq!(
            said.iter()
                .filter(|s| s.starts_with("tx 10.0.0.1"))
                .collect::<Vec<_>>(),
            [
                "tx 10.0.0.1:5060 SIP/2.0 200 OK",
                "tx 10.0.0.1:5060 SIP/2.0 200 OK"
            ]
        );
        let ok = sent
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Response(r) => Some(r.clone()),
                _ => None,
            })
            .next_back()
            .expect("the 2xx");
        assert_eq!(ok.cseq().map(|c| c.method), Some(Method::Invite));
        assert!(!ok.body.is_empty(), "the 2xx repeats the answer");
        // From now on only the 2xx is retransmitted (until the ACK), no provisional.
        for k in 1..4 {
            c.handle_timeout(t + t1 * k);
            let (said, _) = drain(&mut c);
            assert!(said.iter().all(|s| !s.contains(" 18")), "{said:?}");
        }
    }

    /// A caller that never PRACKs is refused with 500 after 64*T1 (RFC 3262 §3), and the
    /// agent's phone stops ringing.
    #[test]
    fn no_prack_in_64_t1_refuses_the_call() {
        let invite = invite_full("Supported: 100rel\r\n", &sdp("10.0.0.1", 40000));
        let (mut c, t0) = start_with(invite, false, vec![Codec::Pcmu]);
        drain(&mut c);
        c.handle_lookup(t0, found());
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        phone_says(&mut c, t0, &inv, 180);
        drain(&mut c);
        let t64 = t0 + TimerConfig::default().t1 * 64;
        let mut said = Vec::new();
        while let Some(w) = c.poll_timeout().filter(|w| *w <= t64) {
            c.handle_timeout(w);
            said.extend(drain(&mut c).0);
        }
        let ringing = said.iter().filter(|s| s.contains("180 Ringing")).count();
        assert_eq!(ringing, 6, "{said:?}");
        assert!(has(&said, "SIP/2.0 500"), "{said:?}");
        assert!(has(&said, "CANCEL sip:agent"), "{said:?}");
        assert!(has(&said, "ended Failed"), "{said:?}");
    }

    /// A trunk that offers SRTP (SDES) gets SRTP back with our key, and the relay decrypts its
    /// leg with the trunk's; the phone, reached over UDP, is offered plain RTP.
    #[test]
    fn a_trunk_offering_srtp_gets_srtp_and_a_udp_phone_plain_rtp() {
        const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let body = format!(
            "v=0\r\no=t 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
             m=audio 40000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\na=sendrecv\r\n"
        );
        let (mut c, t0) = start_with(invite_with(&body), false, vec![Codec::Pcmu]);
        let mut remotes = Vec::new();
        while let Some(o) = c.poll_output() {
            if let Output::Media(MediaCommand::SetRemote(leg, r)) = o {
                remotes.push((leg, r));
            }
        }
        let (leg, caller) = remotes.first().copied().expect("the caller's media");
        assert_eq!(leg, LegId::Caller);
        let keys = caller.srtp.expect("the trunk's leg runs SRTP");
        assert_eq!(keys.theirs, MasterKey::from_inline(KEY).unwrap());
        c.handle_lookup(t0, found());
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        let phone_offer = String::from_utf8_lossy(&inv.body).to_string();
        assert!(
            phone_offer.contains("RTP/AVP") && !phone_offer.contains("a=crypto"),
            "{phone_offer}"
        );
        c.handle_message(t0, answer(&inv), peer(PHONE));
        let (_, sent) = drain(&mut c);
        let ok = String::from_utf8_lossy(&first_ok(&sent).body).to_string();
        assert!(ok.contains("m=audio 30000 RTP/SAVP 0 101\r\n"), "{ok}");
        let ours = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            keys.ours.inline()
        );
        assert!(ok.contains(&ours), "{ok}");
    }

    /// The last INVITE among what was sent (a retried one).
    fn last_invite(sent: &[(Peer, Message)], what: &str) -> Request {
        sent.iter()
            .rev()
            .find_map(|(_, m)| match m {
                Message::Request(r) if r.method == Method::Invite => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{what}"))
    }

    /// A call in the ACD offered to a phone registered over TLS; what was sent then.
    fn offered_to_a_phone_on_tls() -> (Call, Instant, Vec<(Peer, Message)>) {
        let (mut c, t0) = start(false);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let mut o = offer(4);
        if let Decision::Offer(a) = &mut o {
            a.target.peer = Some(Peer {
                addr: PHONE.parse().expect("address"),
                transport: Transport::Tls,
            });
        }
        c.handle_decision(t0, o);
        let (_, sent) = drain(&mut c);
        (c, t0, sent)
    }

    /// A phone reached over TLS is offered SRTP; one that refuses it (488) is rung again in the
    /// same dialog set with plain RTP, and the call goes on.
    #[test]
    fn a_phone_on_tls_that_refuses_srtp_is_rung_again_with_plain_rtp() {
        let (mut c, t0, sent) = offered_to_a_phone_on_tls();
        let inv = agent_invite(&sent);
        let body = String::from_utf8_lossy(&inv.body).to_string();
        assert!(
            body.contains("RTP/SAVP")
                && body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        assert!(inv
            .headers
            .get(&HeaderName::Via)
            .is_some_and(|v| v.starts_with("SIP/2.0/TLS ")));
        phone_says(&mut c, t0, &inv, 488);
        let (said, sent) = drain(&mut c);
        assert!(
            !has(&said, "tx 10.0.0.1:"),
            "the caller hears nothing of it: {said:?}"
        );
        let again = last_invite(&sent, "the phone is rung again");
        let body = String::from_utf8_lossy(&again.body).to_string();
        assert!(
            body.contains("RTP/AVP") && !body.contains("a=crypto"),
            "{body}"
        );
        assert_eq!(again.call_id(), inv.call_id());
        assert_eq!(again.cseq().map(|c| c.seq), inv.cseq().map(|c| c.seq + 1));
        assert_eq!(again.to().and_then(|t| t.tag().map(str::to_string)), None);
        c.handle_message(t0, answer(&again), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.1:5060 SIP/2.0 200 OK"), "{said:?}");
        // A second refusal is final: the ACD hears of it.
        let (mut c, t0, sent) = offered_to_a_phone_on_tls();
        phone_says(&mut c, t0, &agent_invite(&sent), 488);
        let (_, sent) = drain(&mut c);
        let again = last_invite(&sent, "rung again");
        phone_says(&mut c, t0, &again, 488);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "acd Refused"), "{said:?}");
    }

    /// A phone that answers 422 (its Min-SE above the interval we asked) is asked again with
    /// its Min-SE as the interval (RFC 4028 §7.4); the same 422 twice is a failure.
    #[test]
    fn a_phone_that_wants_a_longer_session_is_asked_again() {
        let (mut c, t0, inv) = offered_to_agent();
        assert_eq!(inv.headers.get(&HeaderName::SessionExpires), Some("1800"));
        let mut too_short = inv.response(422, Some("ptag"));
        too_short.headers.push(HeaderName::MinSe, "3600");
        c.handle_message(t0, Message::Response(too_short), peer(PHONE));
        let (said, sent) = drain(&mut c);
        assert!(!has(&said, "tx 10.0.0.1:"), "{said:?}");
        let again = last_invite(&sent, "asked again");
        assert_eq!(again.headers.get(&HeaderName::SessionExpires), Some("3600"));
        assert_eq!(again.headers.get(&HeaderName::MinSe), Some("3600"));
        assert_eq!(again.cseq().map(|c| c.seq), inv.cseq().map(|c| c.seq + 1));
        // The caller cancels while the retried INVITE rings: that one is cancelled, not the
        // finished first one.
        phone_says(&mut c, t0, &again, 180);
        drain(&mut c);
        c.handle_message(t0, trunk("CANCEL", 1, "z9hG4bKinv1", None), peer(TRUNK));
        let (_, sent) = drain(&mut c);
        let cancel = request_in(&sent, Method::Cancel);
        assert_eq!(cancel.cseq().map(|c| c.seq), again.cseq().map(|c| c.seq));
        assert_eq!(
            cancel.headers.get(&HeaderName::Via),
            again.headers.get(&HeaderName::Via)
        );
        // A second 422 is final.
        let (mut c, t0, inv) = offered_to_agent();
        for tag in ["p1", "p2"] {
            let (_, sent) = drain(&mut c);
            let inv = sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    Message::Request(r) if r.method == Method::Invite => Some(r.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| inv.clone());
            let mut r = inv.response(422, Some(tag));
            r.headers
                .push(HeaderName::MinSe, if tag == "p1" { "3600" } else { "7200" });
            c.handle_message(t0, Message::Response(r), peer(PHONE));
        }
        let (said, _) = drain(&mut c);
        assert!(has(&said, "acd Refused"), "{said:?}");
    }

    /// The caller cancels while our 2xx waits for the PRACK of the early media: the caller
    /// gets 487 and the phone that already answered gets a BYE.
    #[test]
    fn a_cancel_while_the_2xx_waits_for_a_prack_releases_the_phone() {
        let invite = invite_full("Require: 100rel\r\n", &sdp("10.0.0.1", 40000));
        let (mut c, t0) = start_with(invite, false, vec![Codec::Pcmu]);
        drain(&mut c);
        c.handle_lookup(t0, found());
        let (_, sent) = drain(&mut c);
        let ringing = rseq_of(&sent, 180);
        c.handle_message(t0, prack(&c, 2, ringing), peer(TRUNK));
        drain(&mut c);
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        let early = inv
            .response(183, Some("ptag"))
            .with_body("application/sdp", sdp("10.0.0.10", 42000).into_bytes());
        c.handle_message(t0, Message::Response(early), peer(PHONE));
        c.handle_message(t0, answer(&inv), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(
            !has(&said, "tx 10.0.0.1:5060 SIP/2.0 200"),
            "held: {said:?}"
        );
        c.handle_message(t0, trunk("CANCEL", 1, "z9hG4bKinv1", None), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "SIP/2.0 487"), "{said:?}");
        assert!(has(&said, "tx 10.0.0.10:5060 BYE sip:agent"), "{said:?}");
    }

    /// A `sips:` INVITE over TLS makes a SIPS dialog: our Contact in it is a SIPS URI
    /// (RFC 3261 §8.1.1.8); the same INVITE as `sip:` over TLS gets `transport=tls`.
    #[test]
    fn a_sips_dialog_gets_a_sips_contact() {
        let tls = Peer {
            addr: TRUNK.parse().expect("address"),
            transport: Transport::Tls,
        };
        for (scheme, want) in [
            ("sips", "<sips:screenpop@10.0.0.2:5060>"),
            ("sip", "<sip:screenpop@10.0.0.2:5060;transport=tls>"),
        ] {
            let mut invite = invite();
            invite.uri = Uri::parse(&format!("{scheme}:100@10.0.0.2")).expect("uri");
            let (mut c, t0) = start_from(invite, false, vec![Codec::Pcmu], tls);
            drain(&mut c);
            c.handle_lookup(t0, found());
            let (_, sent) = drain(&mut c);
            let ringing = sent
                .iter()
                .find_map(|(_, m)| match m {
                    Message::Response(r) if r.status == 180 => Some(r.clone()),
                    _ => None,
                })
                .expect("a 180");
            assert_eq!(ringing.headers.get(&HeaderName::Contact), Some(want));
        }
    }

    const BOB: &str = "10.0.0.11:5060";

    /// What the task hands back for a consultation of agent `agent` (Bob's phone).
    fn consult_key(c: &Call) -> CallKey {
        CallKey::new(format!("{}~consult{}", c.id, c.consults))
    }

    fn consult_ready(agent: AgentId) -> ConsultReady {
        ConsultReady {
            agent: Some(agent),
            name: "Bob".into(),
            target: AgentTarget {
                uri: Uri::parse(&format!("sip:bob@{BOB}")).expect("uri"),
                peer: Some(peer(BOB)),
            },
            peer: peer(BOB),
            port: 43000,
            gateway: None,
        }
    }

    /// The INVITE sent to Bob's phone.
    fn invite_to_bob(sent: &[(Peer, Message)]) -> Request {
        sent.iter()
            .find_map(|(p, m)| match m {
                Message::Request(r) if r.method == Method::Invite && *p == peer(BOB) => {
                    Some(r.clone())
                }
                _ => None,
            })
            .expect("an INVITE to Bob")
    }

    fn bob_answers(inv: &Request) -> Message {
        let mut r = inv.response(200, Some("btag"));
        r.headers
            .push(HeaderName::Contact, format!("<sip:bob@{BOB}>"));
        Message::Response(r.with_body("application/sdp", sdp("10.0.0.11", 44000).into_bytes()))
    }

    fn bob_says(inv: &Request, cseq: u32, method: &str) -> Message {
        request(&format!(
            "{method} sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bKb{cseq}\r\n\
             From: <sip:bob@10.0.0.11>;tag=btag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default(),
        ))
    }

    fn phone_bye(inv: &Request, cseq: u32) -> Message {
        request(&format!(
            "BYE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKpb{cseq}\r\n\
             From: <sip:agent@10.0.0.10>;tag=ptag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} BYE\r\n\
             Content-Length: 0\r\n\r\n",
            inv.headers.get(&HeaderName::From).unwrap_or_default(),
            inv.call_id().unwrap_or_default(),
        ))
    }

    /// A call answered by Alice (agent 4) with a consultation of Bob (agent 5) ringing.
    fn consulting() -> (Call, Instant, Request, Request) {
        let (mut c, t0, alice_inv) = answered();
        c.queue = Some((1, "General".into()));
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t0, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        let t = t0 + Duration::from_secs(10);
        c.handle_control(t, 1, alice(), Control::Consult(TransferTo::Agent(5)));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "consult "), "{said:?}");
        assert!(
            !has(&said, "reply"),
            "the answer waits for the target: {said:?}"
        );
        let ready = consult_ready(5);
        c.handle_consult(t, consult_key(&c), Ok(ready));
        let (said, sent) = drain(&mut c);
        for what in [
            "listen",
            "media ConsultSignallingIp",
            "media Play",
            "publish call.offered",
            "publish call.consult",
            "reply Ok(())",
            "tx 10.0.0.11:5060 INVITE",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        let inv = invite_to_bob(&sent);
        assert!(String::from_utf8_lossy(&inv.body).contains("m=audio 43000 RTP/AVP 0 101"));
        (c, t0, alice_inv, inv)
    }

    fn alice() -> Controller {
        Controller {
            agent: Some(4),
            supervisor: false,
        }
    }

    /// Attended transfer: the caller hears music while Bob's phone rings on a consultation leg
    /// of its own, Alice and Bob talk, and completing it hangs up Alice's phone, makes Bob's leg
    /// the call's agent leg (the engine promotes the consultation) and hands Bob the call in
    /// the ACD; the record names both agents.
    #[test]
    fn an_attended_transfer_consults_then_joins_the_caller_and_the_target() {
        let (mut c, t0, _, inv) = consulting();
        let t = t0 + Duration::from_secs(11);
        c.handle_control(t, 2, alice(), Control::Hold);
        assert!(has(&drain(&mut c).0, "reply Err(Conflict"), "no hold now");
        c.handle_control(t, 3, alice(), Control::CompleteTransfer);
        assert!(
            has(&drain(&mut c).0, "reply Err(Conflict"),
            "not before Bob answers"
        );
        c.handle_message(t, bob_answers(&inv), peer(BOB));
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.11:5060 ACK",
            "media ConsultRemote",
            "media StopPlaying",
            "publish call.consult",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        let t2 = t0 + Duration::from_secs(13);
        c.handle_control(t2, 4, alice(), Control::CompleteTransfer);
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.10:5060 BYE",
            "media PromoteConsult",
            "acd Joined",
            "publish call.transferred",
            "publish call.answered",
            "reply Ok(())",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        // The call is Bob's now.
        c.handle_control(t2, 5, alice(), Control::Hangup);
        assert!(has(&drain(&mut c).0, "reply Err(NotFound)"));
        let t3 = t0 + Duration::from_secs(20);
        c.handle_message(t3, bob_says(&inv, 1, "BYE"), peer(BOB));
        let (said, _) = drain(&mut c);
        assert!(
            has(&said, "tx 10.0.0.1:5060 BYE"),
            "the caller is hung up: {said:?}"
        );
        assert!(has(&said, "ended Answered"), "{said:?}");
        let rec = c.record(t3, true);
        let spans: Vec<(i64, u64, u64)> = rec
            .agents
            .iter()
            .map(|a| (a.agent_id, a.start_ms, a.end_ms))
            .collect();
        assert_eq!(spans, [(4, 0, 11_000), (5, 11_000, 18_000)]);
    }

    /// Cancelling goes back to the caller: Bob's phone is hung up (or stops ringing), his
    /// reservation is given back, his pop closes and the music stops.
    #[test]
    fn a_cancelled_consultation_goes_back_to_the_caller() {
        let (mut c, t0, _, inv) = consulting();
        let t = t0 + Duration::from_secs(12);
        c.handle_message(t, bob_answers(&inv), peer(BOB));
        drain(&mut c);
        c.handle_control(t, 2, alice(), Control::CancelTransfer);
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.11:5060 BYE",
            "media DropConsult",
            "media StopPlaying",
            "acd Ended",
            "publish call.withdrawn",
            "publish call.consult",
            "reply Ok(())",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        assert!(!has(&said, "tx 10.0.0.10:5060 BYE"), "Alice keeps the call");
        // Alice has the call and may consult again.
        c.handle_control(t, 3, alice(), Control::Hold);
        assert!(has(&drain(&mut c).0, "media Play"));
    }

    /// A target that is busy ends the consultation on its own; one still ringing when Alice
    /// cancels gets a CANCEL.
    #[test]
    fn a_busy_or_cancelled_ringing_target_leaves_the_call_with_the_agent() {
        let (mut c, t0, _, inv) = consulting();
        let t = t0 + Duration::from_secs(11);
        let mut busy = inv.response(486, Some("btag"));
        busy.headers.push(HeaderName::ContentLength, "0");
        c.handle_message(t, Message::Response(busy), peer(BOB));
        let (said, _) = drain(&mut c);
        for what in ["tx 10.0.0.11:5060 ACK", "media DropConsult", "acd Ended"] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        c.handle_control(t, 2, alice(), Control::Consult(TransferTo::Agent(5)));
        drain(&mut c);
        let ready = consult_ready(5);
        c.handle_consult(t, consult_key(&c), Ok(ready));
        let (_, sent) = drain(&mut c);
        let inv2 = invite_to_bob(&sent);
        let mut ringing = inv2.response(180, Some("b2"));
        ringing.headers.push(HeaderName::ContentLength, "0");
        c.handle_message(t, Message::Response(ringing), peer(BOB));
        drain(&mut c);
        c.handle_control(t, 3, alice(), Control::CancelTransfer);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.11:5060 CANCEL"), "{said:?}");
        assert!(has(&said, "reply Ok(())"), "{said:?}");
    }

    /// A consultation whose target was busy keeps nothing of the call's task once the call is
    /// over: the ACK for repeats of Bob's 486 goes to the dispatcher with the rest.
    #[test]
    fn a_busy_consultation_leaves_its_ack_not_the_task() {
        let (mut c, t0, _, inv) = consulting();
        let t = t0 + Duration::from_secs(11);
        let mut busy = inv.response(486, Some("btag"));
        busy.headers.push(HeaderName::ContentLength, "0");
        c.handle_message(t, Message::Response(busy), peer(BOB));
        drain(&mut c);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, sent) = drain(&mut c);
        assert!(has(&said, "ended Answered"), "{said:?}");
        let bye = sent
            .iter()
            .find_map(|(p, m)| match m {
                Message::Request(r) if r.method == Method::Bye && *p == peer(PHONE) => {
                    Some(r.clone())
                }
                _ => None,
            })
            .expect("a BYE to Alice's phone");
        c.handle_message(t, Message::Response(bye.response(200, None)), peer(PHONE));
        drain(&mut c);
        assert!(c.is_done(t), "nothing but its remains is left");
        let branch = inv.top_via().unwrap().branch().unwrap().to_string();
        let remains = c.remains();
        assert!(
            remains.iter().any(|(r, p)| matches!(r,
                Remains::Reack { branch: b, .. } if *b == branch)
                && *p == peer(BOB)),
            "{remains:?}"
        );
    }

    /// Alice putting her phone down while Bob still rings does not drop the caller: Bob gets
    /// the caller when he answers (and the caller would go back to the queue if he did not).
    #[test]
    fn the_agent_hanging_up_during_the_consultation_hands_the_caller_over() {
        let (mut c, t0, alice_inv, inv) = consulting();
        let t = t0 + Duration::from_secs(11);
        c.handle_message(t, phone_bye(&alice_inv, 5), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 SIP/2.0 200 OK"), "{said:?}");
        assert!(!has(&said, "ended"), "the caller stays: {said:?}");
        assert!(has(&said, "acd AgentLeft"), "{said:?}");
        c.handle_message(t, bob_answers(&inv), peer(BOB));
        let (said, _) = drain(&mut c);
        for what in [
            "media PromoteConsult",
            "acd Joined",
            "publish call.answered",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        assert!(
            !has(&said, "tx 10.0.0.10:5060 BYE"),
            "Alice is gone already"
        );
        assert!(!has(&said, "tx 10.0.0.1:5060 BYE"), "the caller stays");
    }

    /// The caller hanging up during a consultation lets Bob go too.
    #[test]
    fn the_caller_hanging_up_during_a_consultation_ends_it() {
        let (mut c, t0, _, inv) = consulting();
        let t = t0 + Duration::from_secs(11);
        c.handle_message(t, bob_answers(&inv), peer(BOB));
        drain(&mut c);
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.11:5060 BYE",
            "tx 10.0.0.10:5060 BYE",
            "acd Ended",
            "publish call.withdrawn",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
    }

    /// Review findings: the agent putting the phone down while the target is still being
    /// looked up, which then turns out busy, sends the caller back into the queue (with music,
    /// the first desktop told) instead of leaving a silent line.
    #[test]
    fn a_handoff_whose_target_cannot_be_reached_requeues_the_caller() {
        let (mut c, t0, alice_inv) = answered();
        c.queue = Some((1, "General".into()));
        let t = t0 + Duration::from_secs(10);
        c.handle_control(t, 1, alice(), Control::Consult(TransferTo::Agent(5)));
        drain(&mut c);
        c.handle_message(t, phone_bye(&alice_inv, 5), peer(PHONE));
        drain(&mut c);
        let key = consult_key(&c);
        assert!(c.awaits_consult(&key));
        c.handle_consult(t, key, Err(ConsultRefused::Busy));
        let (said, _) = drain(&mut c);
        for what in [
            "reply Err(Conflict",
            "media Play",
            "publish call.transferred",
            "acd Transfer",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        assert!(!has(&said, "ended"), "{said:?}");
    }

    /// During a consultation a caller's hold is not mirrored to the agent's phone (the agent
    /// is talking to the target), and a hold from the agent's phone ends with its leg when the
    /// transfer completes, so the target's desktop can hold and resume.
    #[test]
    fn holds_during_a_consultation_do_not_cross_to_the_wrong_phone() {
        let (mut c, t0, alice_inv, inv) = consulting();
        let t = t0 + Duration::from_secs(11);
        c.handle_message(t, bob_answers(&inv), peer(BOB));
        drain(&mut c);
        c.handle_message(t, caller_reinvite(&c, 2, "sendonly"), peer(TRUNK));
        let (said, _) = drain(&mut c);
        assert!(!has(&said, "tx 10.0.0.10:5060 INVITE"), "{said:?}");
        c.handle_message(t, phone_reinvite(&alice_inv, 6, "sendonly"), peer(PHONE));
        drain(&mut c);
        assert!(c.hold.is_some());
        c.handle_control(t, 2, alice(), Control::CompleteTransfer);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "media PromoteConsult"), "{said:?}");
        assert!(c.hold.is_none(), "the phone's hold ended with its leg");
        assert!(
            has(&said, "tx 10.0.0.11:5060 INVITE"),
            "the caller's hold reaches Bob's phone now: {said:?}"
        );
    }

    fn survey_setup(thanks: bool) -> std::sync::Arc<SurveySetup> {
        use crate::media::player::Clip;
        std::sync::Arc::new(SurveySetup {
            prompt: std::sync::Arc::new(Clip::from_pcm(vec![0; 8000])),
            thanks: thanks.then(|| std::sync::Arc::new(Clip::from_pcm(vec![0; 4000]))),
            timeout: Duration::from_secs(5),
        })
    }

    /// A call in a queue with a survey (a 1 s prompt, a 0.5 s thanks if `thanks`, 5 s to
    /// press), answered by agent 4 at t0 + 2 s and ACKed by the trunk.
    fn answered_in_survey_queue(thanks: bool) -> (Call, Instant, Request) {
        let (mut c, t0) = start(false);
        drain(&mut c);
        c.handle_lookup(t0, found());
        c.handle_decision(
            t0,
            Decision::Queued {
                queue: 1,
                name: "Care".into(),
                crm_url: None,
                music: None,
                survey: Some(survey_setup(thanks)),
            },
        );
        c.handle_decision(t0, offer(4));
        let (_, sent) = drain(&mut c);
        let inv = agent_invite(&sent);
        phone_says(&mut c, t0, &inv, 180);
        let t = t0 + Duration::from_secs(2);
        c.handle_message(t, answer(&inv), peer(PHONE));
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("ACK", 1, "z9hG4bKack", Some(&tag)), peer(TRUNK));
        drain(&mut c);
        (c, t0, inv)
    }

    /// Drains as [`drain`] does, keeping the end's record.
    fn drain_ended(c: &mut Call) -> (Vec<String>, Option<CallRecord>) {
        let mut record = None;
        let mut kept = VecDeque::new();
        while let Some(o) = c.poll_output() {
            if let Output::Ended { record: r, .. } = &o {
                record = Some((**r).clone());
            }
            kept.push_back(o);
        }
        c.out = kept;
        (drain(c).0, record)
    }

    fn tx_bye_to_trunk(said: &[String]) -> bool {
        has(said, "tx 10.0.0.1:5060 BYE")
    }

    /// Issue 12: the agent hangs up first; the caller stays, hears the prompt, presses 4 (an
    /// RFC 4733 event the relay reports) during it, hears the thanks and is hung up on; the
    /// score, when the survey began and the agent's talk time are in the record.
    #[test]
    fn the_agent_hanging_up_first_keeps_the_caller_for_the_survey() {
        let (mut c, t0, inv) = answered_in_survey_queue(true);
        let t = t0 + Duration::from_secs(10);
        c.handle_message(t, phone_bye(&inv, 5), peer(PHONE));
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.10:5060 SIP/2.0 200 OK",
            "acd AgentLeft",
            "media Hush",
            "media Watch",
            "publish call.survey",
            "media PlayOnce",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        assert!(!has(&said, "ended"), "the caller stays: {said:?}");
        assert!(!tx_bye_to_trunk(&said), "{said:?}");
        // Keys on the agent's leg, 0 and # are no score.
        c.handle_media(
            t,
            MediaEvent::Digit {
                leg: LegId::Agent,
                digit: '5',
            },
        );
        c.handle_media(
            t,
            MediaEvent::Digit {
                leg: LegId::Caller,
                digit: '0',
            },
        );
        assert!(drain(&mut c).0.is_empty());
        let t1 = t + Duration::from_millis(600);
        c.handle_media(
            t1,
            MediaEvent::Digit {
                leg: LegId::Caller,
                digit: '4',
            },
        );
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["media PlayOnce"], "the thanks");
        // The prompt's end crossed the key: the thanks plays on.
        c.handle_media(t1, MediaEvent::Played { leg: LegId::Caller });
        assert!(drain(&mut c).0.is_empty());
        let t2 = t1 + Duration::from_millis(510);
        c.handle_media(t2, MediaEvent::Played { leg: LegId::Caller });
        let (said, record) = drain_ended(&mut c);
        assert!(tx_bye_to_trunk(&said), "{said:?}");
        assert!(has(&said, "publish call.survey"), "{said:?}");
        assert!(has(&said, "ended Answered"), "{said:?}");
        assert!(has(&said, "acd Ended"), "{said:?}");
        let record = record.expect("the end's record");
        let survey = record.survey.expect("asked");
        assert_eq!(survey.score, Some(4));
        assert_eq!(
            survey.offered_at_ms,
            record.answered_at_ms.expect("answered") + 8_000
        );
        assert_eq!(record.talk_ms(), 8_000, "the survey is not talk");
        assert_eq!(record.duration_ms, 9_110);
        assert_eq!(record.ended_by, Some(EndedBy::Agent));
        assert_eq!(record.agents.len(), 1);
        assert_eq!(record.agents[0].end_ms, 8_000);
        let ended = record.ended_call(None);
        assert_eq!(
            (ended.survey_score, ended.survey_offered_at),
            (Some(4), Some(survey.offered_at_ms as i64))
        );
    }

    /// A caller who presses nothing is hung up on at the prompt's end plus the timeout (here
    /// the prompt's report never comes: its length and a margin stand in), with no score.
    #[test]
    fn a_caller_who_presses_nothing_gets_no_score() {
        let (mut c, t0, inv) = answered_in_survey_queue(true);
        let t = t0 + Duration::from_secs(10);
        c.handle_message(t, phone_bye(&inv, 5), peer(PHONE));
        drain(&mut c);
        let mut now;
        let record = loop {
            now = c.poll_timeout().expect("a timer");
            assert!(now <= t + Duration::from_secs(8), "the survey lingers");
            c.handle_timeout(now);
            let (said, record) = drain_ended(&mut c);
            if let Some(r) = record {
                assert!(tx_bye_to_trunk(&said), "{said:?}");
                break r;
            }
        };
        // 1 s prompt + 2 s margin for its report, then 5 s to press.
        assert_eq!(now, t + Duration::from_secs(8));
        let survey = record.survey.expect("asked");
        assert_eq!(survey.score, None);
        assert_eq!(record.ended_call(None).survey_score, None);
        assert_eq!(record.disposition, Disposition::Answered);
    }

    /// SIP INFO carries the digit from gateways without RFC 4733; without a thanks the call
    /// ends at once. While the survey runs the agent's desktop no longer controls the call
    /// and a supervisor may only hang it up.
    #[test]
    fn an_info_digit_scores_and_the_desk_waits_for_the_survey() {
        let (mut c, t0, inv) = answered_in_survey_queue(false);
        let t = t0 + Duration::from_secs(5);
        c.handle_message(t, phone_bye(&inv, 5), peer(PHONE));
        drain(&mut c);
        c.handle_control(t, 1, alice(), Control::Hold);
        assert!(has(&drain(&mut c).0, "reply Err(NotFound)"));
        let sup = Controller {
            agent: Some(1),
            supervisor: true,
        };
        c.handle_control(t, 2, sup, Control::Hold);
        assert!(has(&drain(&mut c).0, "reply Err(Conflict"));
        let tag = c.caller_leg.local_tag().to_string();
        let info = |cseq: u32, ct: &str, body: &str| {
            request(&format!(
                "INFO sip:100@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKi{cseq}\r\n\
                 From: <sip:+8613800138000@10.0.0.1>;tag=t1\r\nTo: <sip:100@10.0.0.2>;tag={tag}\r\n\
                 Call-ID: unit@10.0.0.1\r\nCSeq: {cseq} INFO\r\nContent-Type: {ct}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        c.handle_message(
            t,
            info(2, "application/dtmf-relay", "Signal=#\r\nDuration=160\r\n"),
            peer(TRUNK),
        );
        let (said, _) = drain(&mut c);
        assert_eq!(said, ["tx 10.0.0.1:5060 SIP/2.0 200 OK"], "# is no score");
        c.handle_message(
            t,
            info(3, "application/dtmf-relay", "Signal=9\r\nDuration=160\r\n"),
            peer(TRUNK),
        );
        let (said, record) = drain_ended(&mut c);
        assert!(has(&said, "tx 10.0.0.1:5060 SIP/2.0 200 OK"), "{said:?}");
        assert!(tx_bye_to_trunk(&said), "{said:?}");
        assert_eq!(record.and_then(|r| r.survey).and_then(|s| s.score), Some(9));
    }

    /// The agent's hang-up from the desktop asks the survey too; the caller hanging up
    /// during it ends the call with no score; a caller who hangs up first is not asked.
    #[test]
    fn the_desks_hang_up_asks_too_and_a_caller_who_leaves_ends_it() {
        let (mut c, t0, _) = answered_in_survey_queue(true);
        let t = t0 + Duration::from_secs(5);
        c.handle_control(t, 1, alice(), Control::Hangup);
        let (said, _) = drain(&mut c);
        for what in [
            "tx 10.0.0.10:5060 BYE",
            "acd AgentLeft",
            "publish call.survey",
            "media PlayOnce",
            "reply Ok(())",
        ] {
            assert!(has(&said, what), "{what}: {said:?}");
        }
        assert!(!tx_bye_to_trunk(&said), "{said:?}");
        let tag = c.caller_leg.local_tag().to_string();
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, record) = drain_ended(&mut c);
        assert!(has(&said, "publish call.survey"), "{said:?}");
        assert!(!tx_bye_to_trunk(&said), "{said:?}");
        let record = record.expect("ended");
        assert_eq!(record.ended_by, Some(EndedBy::Desk));
        assert_eq!(record.survey.map(|s| s.score), Some(None));

        let (mut c, t0, _) = answered_in_survey_queue(true);
        let tag = c.caller_leg.local_tag().to_string();
        let t = t0 + Duration::from_secs(5);
        c.handle_message(t, trunk("BYE", 2, "z9hG4bKbye", Some(&tag)), peer(TRUNK));
        let (said, record) = drain_ended(&mut c);
        assert!(!has(&said, "call.survey"), "{said:?}");
        assert!(has(&said, "tx 10.0.0.10:5060 BYE"), "{said:?}");
        assert!(record.expect("ended").survey.is_none());
    }

    /// Review findings: a desk hold the phone had not confirmed when the agent hung up is no
    /// hold in the record; the retired leg keeps its Call-ID in the record; silence is not
    /// watched while the caller answers the survey.
    #[test]
    fn an_unconfirmed_hold_is_no_hold_and_the_record_keeps_the_agents_call_id() {
        let (mut c, t0, inv) = answered_in_survey_queue(false);
        let t = t0 + Duration::from_secs(5);
        c.handle_control(t, 7, alice(), Control::Hold);
        let (said, _) = drain(&mut c);
        assert!(has(&said, "tx 10.0.0.10:5060 INVITE"), "{said:?}");
        c.handle_message(t, phone_bye(&inv, 5), peer(PHONE));
        let (said, _) = drain(&mut c);
        assert!(has(&said, "reply Err(NotFound)"), "{said:?}");
        assert_eq!(c.media_watch(), None);
        c.handle_media(
            t,
            MediaEvent::Digit {
                leg: LegId::Caller,
                digit: '8',
            },
        );
        let (_, record) = drain_ended(&mut c);
        let record = record.expect("ended");
        assert!(record.holds.is_empty(), "{:?}", record.holds);
        assert_eq!(
            record.agent_call_id.as_str(),
            inv.call_id().unwrap_or_default()
        );
        assert_eq!(record.survey.and_then(|s| s.score), Some(8));
    }
}
