//! Accounts and their phones. This one service changes an agent in the store and, with it, the
//! registrar's digest credentials, the ACD and the desktops, so they never disagree: a phone
//! registers with exactly the credentials of an active account; a deactivated account's phone
//! can no longer register and its desktops close; a changed SIP user name stops answering to the
//! old one. SIP passwords are hashed here (digest HA1s for the realm) and never stored in clear.

use std::sync::{Arc, Mutex};

use tracing::info;

use crate::acd::runtime::AcdHandle;
use crate::events::{Event, EventBus, Payload};
use crate::sip::digest::Secret;
use crate::sip::registrar::Registrar;
use crate::store::agents::{Agent, AgentPatch, NewAgent, SipTarget};
use crate::store::{Store, StoreError};

/// How an agent's phone is reached, as an admin gives it.
pub(crate) struct PhoneSetting {
    pub uri: Option<String>,
    pub username: Option<String>,
    /// In clear, only on its way to being hashed.
    pub password: Option<String>,
}

/// See the module documentation.
pub struct Agents {
    store: Store,
    registrar: Arc<Mutex<Registrar>>,
    acd: AcdHandle,
    bus: Arc<dyn EventBus>,
    realm: String,
}

impl Agents {
    pub fn new(
        store: Store,
        registrar: Arc<Mutex<Registrar>>,
        acd: AcdHandle,
        bus: Arc<dyn EventBus>,
        realm: String,
    ) -> Agents {
        Agents {
            store,
            registrar,
            acd,
            bus,
            realm,
        }
    }

    /// Gives the registrar the credentials of every active agent whose phone registers with
    /// screenpop (at start-up, before any REGISTER is answered). Returns how many.
    pub async fn load(store: &Store, registrar: &Mutex<Registrar>) -> Result<usize, StoreError> {
        let agents = store.agents().await?;
        let mut reg = lock(registrar);
        let mut n = 0;
        for a in agents.iter().filter(|a| a.active) {
            if let SipTarget::Registered {
                username,
                ha1_md5,
                ha1_sha256,
            } = &a.sip
            {
                reg.set_user(
                    username,
                    Secret::Ha1 {
                        md5: ha1_md5.clone(),
                        sha256: ha1_sha256.clone(),
                    },
                );
                n += 1;
            }
        }
        Ok(n)
    }

    /// The SIP target from a phone setting: a URI to ring, or a user name and password the phone
    /// registers with (kept as HA1s for the realm); `None` when neither is given. Errors name the
    /// field.
    pub fn sip_target(&self, p: PhoneSetting) -> Result<Option<SipTarget>, StoreError> {
        let invalid = |field: &'static str, why: &str| StoreError::Invalid {
            field,
            why: why.to_string(),
        };
        Ok(Some(match (p.uri, p.username, p.password) {
            (Some(_), Some(_), _) => {
                return Err(invalid("sip_uri", "give sip_uri or sip_username, not both"))
            }
            (Some(uri), None, _) => {
                crate::sip::Uri::parse(&uri).map_err(|e| invalid("sip_uri", &e.to_string()))?;
                SipTarget::Uri(uri)
            }
            (None, Some(user), Some(pw)) => {
                if user.is_empty() || user.contains(['@', ':', ' ']) {
                    return Err(invalid("sip_username", "a plain user name"));
                }
                if pw.is_empty() {
                    return Err(invalid("sip_password", "must not be empty"));
                }
                match Secret::hashed(&user, &self.realm, &pw) {
                    Secret::Ha1 { md5, sha256 } => SipTarget::Registered {
                        username: user,
                        ha1_md5: md5,
                        ha1_sha256: sha256,
                    },
                    Secret::Password(_) => {
                        return Err(StoreError::Invalid {
                            field: "sip_password",
                            why: "could not be hashed".into(),
                        })
                    }
                }
            }
            (None, Some(_), None) => {
                return Err(invalid("sip_password", "required with sip_username"))
            }
            (None, None, _) => return Ok(None),
        }))
    }

    /// Creates an account; its phone may register at once.
    pub async fn create(&self, new: &NewAgent) -> Result<Agent, StoreError> {
        let agent = self.store.create_agent(new).await?;
        self.sync(None, &agent);
        self.acd.reload();
        Ok(agent)
    }

    /// Changes an account; the registrar, the ACD and (on deactivation) the desktops follow.
    pub async fn update(&self, id: i64, patch: &AgentPatch) -> Result<Agent, StoreError> {
        let before = self.store.agent(id).await?;
        let agent = self.store.update_agent(id, patch).await?;
        self.sync(before.as_ref(), &agent);
        if !agent.active {
            self.bus
                .publish(Event::new(Payload::AgentDeactivated { agent_id: id }));
        }
        self.acd.reload();
        Ok(agent)
    }

    /// Makes the registrar hold exactly `after`'s credentials where it held `before`'s.
    fn sync(&self, before: Option<&Agent>, after: &Agent) {
        let mut reg = lock(&self.registrar);
        let new_user = match (&after.sip, after.active) {
            (
                SipTarget::Registered {
                    username,
                    ha1_md5,
                    ha1_sha256,
                },
                true,
            ) => {
                reg.set_user(
                    username,
                    Secret::Ha1 {
                        md5: ha1_md5.clone(),
                        sha256: ha1_sha256.clone(),
                    },
                );
                Some(username.as_str())
            }
            _ => None,
        };
        if let Some(SipTarget::Registered { username, .. }) = before.map(|b| &b.sip) {
            if new_user != Some(username.as_str()) {
                reg.remove_user(username);
                info!(agent = after.id, user = %username, "phone credentials withdrawn");
            }
        }
    }
}

fn lock(r: &Mutex<Registrar>) -> std::sync::MutexGuard<'_, Registrar> {
    match r.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
