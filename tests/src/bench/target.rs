//! What the load generator talks to: any XMPP server, described by its
//! listeners, domain, pubsub service and accounts, plus the processes that
//! serve it (for CPU time and resident memory).

use std::time::Duration;

use jid::BareJid;
use vomesh_broker::client::{ClientConfig, Trust};

use crate::measure::{clock_ticks_per_second, cpu_ticks, rss_bytes, run_queue_wait};

/// A server (or a mesh of them) under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in reports: `vomesh`, `prosody`, `ejabberd`, `vomesh-mesh3`.
    pub label: String,
    /// `host:port` of each STARTTLS listener; sessions are spread over
    /// them in turn (one per site of a mesh). The publisher uses the first.
    pub servers: Vec<String>,
    /// The XMPP domain of the accounts.
    pub domain: String,
    /// The JID of the XEP-0060 service.
    pub service: String,
    /// Localparts of the subscriber accounts; sessions use them in turn,
    /// each with its own server-generated resource.
    pub accounts: Vec<String>,
    /// Localpart of the publisher's account.
    pub publisher: String,
    /// The password of every account.
    pub password: String,
    pub trust: Trust,
    /// The server processes, whose CPU time and memory are summed.
    pub server_pids: Vec<u32>,
}

impl Target {
    /// Settings of subscriber session `index`: account `index mod
    /// accounts`, listener `index mod servers`.
    pub fn subscriber(&self, index: usize) -> ClientConfig {
        let account = &self.accounts[index % self.accounts.len()];
        self.config(account, &self.servers[index % self.servers.len()])
    }

    /// Settings of the publisher, at the first listener.
    pub fn publisher(&self) -> ClientConfig {
        self.config(&self.publisher, &self.servers[0])
    }

    fn config(&self, localpart: &str, server: &str) -> ClientConfig {
        ClientConfig {
            jid: BareJid::new(&format!("{localpart}@{}", self.domain))
                .unwrap_or_else(|e| panic!("{localpart}@{} is not a JID: {e}", self.domain)),
            password: self.password.clone(),
            server: server.to_owned(),
            direct_tls: false,
            resource: None,
            trust: self.trust.clone(),
        }
    }

    /// CPU time (user + system) of the server processes so far.
    pub fn server_cpu(&self) -> Duration {
        self.server_pids
            .iter()
            .filter_map(|pid| cpu_ticks(&pid.to_string()).ok())
            .map(ticks_to_duration)
            .sum()
    }

    /// Time the server's threads were runnable but waited for a CPU: on a
    /// shared machine, how much the others slowed it down.
    pub fn server_cpu_wait(&self) -> Duration {
        self.server_pids
            .iter()
            .filter_map(|pid| run_queue_wait(&pid.to_string()).ok())
            .sum()
    }

    /// Resident memory of the server processes, in bytes.
    pub fn server_rss(&self) -> u64 {
        self.server_pids
            .iter()
            .filter_map(|&pid| rss_bytes(pid).ok())
            .sum()
    }
}

/// CPU time of this load generator so far.
pub fn own_cpu() -> Duration {
    cpu_ticks("self").map_or(Duration::ZERO, ticks_to_duration)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
}

/// CPU used by the server and by the load generator between two instants.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: Duration,
    own: Duration,
    server_wait: Duration,
}

impl CpuMark {
    pub fn now(target: &Target) -> CpuMark {
        CpuMark {
            server: target.server_cpu(),
            own: own_cpu(),
            server_wait: target.server_cpu_wait(),
        }
    }

    /// How long the server waited for a CPU since this mark.
    pub fn server_wait(&self, target: &Target) -> Duration {
        target.server_cpu_wait().saturating_sub(self.server_wait)
    }

    /// (server, load generator) CPU time since this mark.
    pub fn elapsed(&self, target: &Target) -> (Duration, Duration) {
        let now = CpuMark::now(target);
        (
            now.server.saturating_sub(self.server),
            now.own.saturating_sub(self.own),
        )
    }
}
