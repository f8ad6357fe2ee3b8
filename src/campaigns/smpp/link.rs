//! The SMPP session on a TCP connection: connects, binds, reconnects with back-off (1 s
//! doubling to 60 s; a refused bind is logged with its status and tried again the same way,
//! never a crash), and hands texts in and results out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{Session, SmppEvent, SmppSettings, Submit};

/// What the SMS center said about one text.
pub type SubmitResult = Result<String, (String, bool)>;

/// Receipts and customers' texts, for the campaign runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Receipt {
        message_id: String,
        delivered: bool,
        stat: String,
    },
    Text {
        from: String,
        text: String,
    },
}

/// Sends texts over the link; cheap to clone.
#[derive(Clone)]
pub struct SmppLink {
    tx: mpsc::Sender<(String, String, oneshot::Sender<SubmitResult>)>,
    up: Arc<AtomicBool>,
}

impl SmppLink {
    /// Bound to the SMS center now: while it is not, the runner holds texts back rather than
    /// spend their tries.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Sends `text` to `to`: the first part's message id, or why not and whether another
    /// try may work.
    pub async fn send(&self, to: &str, text: &str) -> SubmitResult {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send((to.to_string(), text.to_string(), reply))
            .await
            .is_err()
        {
            return Err(("the SMPP link is not running".into(), true));
        }
        rx.await
            .unwrap_or_else(|_| Err(("the SMPP link stopped".into(), true)))
    }
}

/// Starts the link to `addr` (`host:port`); receipts and texts go to `incoming`.
pub fn spawn(
    addr: String,
    cfg: SmppSettings,
    incoming: mpsc::UnboundedSender<Incoming>,
) -> SmppLink {
    let (tx, rx) = mpsc::channel(1024);
    let up = Arc::new(AtomicBool::new(false));
    tokio::spawn(run(addr, cfg, incoming, rx, up.clone()));
    SmppLink { tx, up }
}

async fn run(
    addr: String,
    cfg: SmppSettings,
    incoming: mpsc::UnboundedSender<Incoming>,
    mut requests: mpsc::Receiver<(String, String, oneshot::Sender<SubmitResult>)>,
    up: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut next_id: u64 = 0;
    let mut waiting: HashMap<u64, oneshot::Sender<SubmitResult>> = HashMap::new();
    let mut session = Session::new(cfg, Instant::now());
    loop {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                warn!(smsc = %addr, error = %e, retry_in = ?backoff, "SMS center unreachable");
                refuse_while_down(&mut requests, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        session.connected(Instant::now());
        let mut buf = vec![0u8; 16 * 1024];
        let mut broken: Option<String> = None;
        let why = 'conn: loop {
            while let Some(bytes) = session.poll_transmit() {
                if let Err(e) = stream.write_all(&bytes).await {
                    break 'conn format!("write: {e}");
                }
            }
            while let Some(ev) = session.poll_event() {
                match ev {
                    SmppEvent::Bound => {
                        info!(smsc = %addr, "bound to the SMS center");
                        up.store(true, Ordering::Relaxed);
                        backoff = Duration::from_secs(1);
                    }
                    SmppEvent::BindRefused { status } => {
                        warn!(smsc = %addr, status = format!("0x{status:08X}"), retry_in = ?backoff, "the SMS center refused the bind");
                        break 'conn "bind refused".into();
                    }
                    SmppEvent::Accepted { id, message_id } => {
                        if let Some(r) = waiting.remove(&id) {
                            let _ = r.send(Ok(message_id));
                        }
                    }
                    SmppEvent::Refused { id, why, temporary } => {
                        if let Some(r) = waiting.remove(&id) {
                            let _ = r.send(Err((why, temporary)));
                        }
                    }
                    SmppEvent::Receipt {
                        message_id,
                        delivered,
                        stat,
                    } => {
                        // Never blocks: the link must keep reading its responses.
                        let _ = incoming.send(Incoming::Receipt {
                            message_id,
                            delivered,
                            stat,
                        });
                    }
                    SmppEvent::Received { from, text } => {
                        let _ = incoming.send(Incoming::Text { from, text });
                    }
                    // Everything that came with it is still handed on first.
                    SmppEvent::Broken { why } => broken = broken.or(Some(why)),
                }
            }
            if let Some(why) = broken.take() {
                break 'conn why;
            }
            let wake = session
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
            tokio::select! {
                // Responses already received are read before any timer can call them late.
                biased;
                r = stream.read(&mut buf) => match r {
                    Ok(0) => break 'conn "closed by the SMS center".into(),
                    Ok(n) => session.receive(Instant::now(), &buf[..n]),
                    Err(e) => break 'conn format!("read: {e}"),
                },
                req = requests.recv(), if session.is_bound() => match req {
                    Some((to, text, reply)) => {
                        next_id += 1;
                        waiting.insert(next_id, reply);
                        session.submit(Instant::now(), Submit { id: next_id, to, text });
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.into()) => session.handle_timeout(Instant::now()),
            }
        };
        warn!(smsc = %addr, why = %why, retry_in = ?backoff, "SMPP link down");
        up.store(false, Ordering::Relaxed);
        session.closed();
        while let Some(ev) = session.poll_event() {
            if let SmppEvent::Refused { id, why, temporary } = ev {
                if let Some(r) = waiting.remove(&id) {
                    let _ = r.send(Err((why, temporary)));
                }
            }
        }
        drop(stream);
        refuse_while_down(&mut requests, backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Waits `pause` before the next connection, refusing texts meanwhile (as temporary: the
/// runner tries them again later) rather than holding them.
async fn refuse_while_down(
    requests: &mut mpsc::Receiver<(String, String, oneshot::Sender<SubmitResult>)>,
    pause: Duration,
) {
    let until = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            req = requests.recv() => match req {
                Some((_, _, reply)) => {
                    let _ = reply.send(Err(("not bound to the SMS center".into(), true)));
                }
                None => return,
            },
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}
