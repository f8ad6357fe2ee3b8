//! A call center for the end-to-end tests: an ACD profile (calls go through the store's queues),
//! a first admin made the README's way (`screenpop admin create`), a running server, and
//! helpers to add queues, agents whose phones are SIPp UASes, desktops and customers.
#![allow(dead_code)]

use serde_json::{json, Value};

use super::desk::{Api, Desktop};
use super::{Env, Ports, Server};

pub const ADMIN_PASSWORD: &str = "admin-pass-1";

pub struct Center {
    pub env: Env,
    pub server: Server,
    pub admin: Api,
}

/// An ACD profile, a first admin made with `screenpop admin create`, and a running server.
pub fn center(name: &str) -> Option<Center> {
    center_with(name, "")
}

/// As [`center`], with `top` (keys of the profile's top level, such as `hold_music`) added.
pub fn center_with(name: &str, top: &str) -> Option<Center> {
    let env = Env::with_sipp(name)?;
    env.write_acd_profile();
    if !top.is_empty() {
        let profile = std::fs::read_to_string(&env.profile).expect("profile");
        let profile = profile.replacen("\n[trust]", &format!("\n{top}\n\n[trust]"), 1);
        std::fs::write(&env.profile, profile).expect("profile");
    }
    env.admin_create("admin", ADMIN_PASSWORD);
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    Some(Center { env, server, admin })
}

/// As [`center`], with a TLS listener on `env.ports.tls()` presenting a certificate made now
/// (`env.dir/server.pem`, which a phone trusts as its CA).
pub fn center_tls(name: &str) -> Option<Center> {
    let env = Env::with_sipp(name)?;
    env.write_acd_profile();
    let cert = super::tls::make_cert(&env.dir, "server");
    let mut profile = std::fs::read_to_string(&env.profile).expect("profile");
    profile.push_str(&format!(
        "\n[tls]\nport = {}\ncert = \"{}\"\nkey = \"{}\"\n",
        env.ports.tls(),
        cert.cert.display(),
        cert.key.display()
    ));
    std::fs::write(&env.profile, profile).expect("profile");
    env.admin_create("admin", ADMIN_PASSWORD);
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    Some(Center { env, server, admin })
}

impl Center {
    pub fn queue(&self, body: Value) -> i64 {
        self.admin.ok("POST", "/api/queues", Some(body))["id"]
            .as_i64()
            .expect("queue id")
    }

    /// An agent whose phone is a SIPp UAS on `ports`; returns the agent's own API login.
    pub fn agent(&self, username: &str, ports: &Ports, skills: &[&str], queues: &[i64]) -> Api {
        let uri = format!("sip:{username}@127.0.0.1:{}", ports.agent_sip());
        self.new_agent(username, json!({"sip_uri": uri}), skills, queues)
    }

    /// An agent whose phone registers with screenpop as `username` with `sip_password`;
    /// returns the agent's own API login.
    pub fn agent_with_phone(&self, username: &str, sip_password: &str, queues: &[i64]) -> Api {
        let phone = json!({"sip_username": username, "sip_password": sip_password});
        self.new_agent(username, phone, &[], queues)
    }

    /// Creates an agent with `phone` (its SIP fields) and logs in as it.
    fn new_agent(&self, username: &str, phone: Value, skills: &[&str], queues: &[i64]) -> Api {
        let mut body = json!({
            "username": username,
            "password": format!("{username}-password"),
            "display_name": username.to_uppercase(),
            "role": "agent",
            "skills": skills,
            "queues": queues,
        });
        if let (Some(b), Some(p)) = (body.as_object_mut(), phone.as_object()) {
            b.extend(p.clone());
        }
        self.admin.ok("POST", "/api/agents", Some(body));
        Api::login(
            &self.env.http_base(),
            username,
            &format!("{username}-password"),
        )
    }

    pub fn desktop(&self, api: &Api, name: &str) -> Desktop {
        Desktop::connect(&self.env.http_base(), &api.token, name)
    }

    pub fn customer(&self, body: Value) -> Value {
        self.admin.ok("POST", "/api/customers", Some(body))
    }
}
