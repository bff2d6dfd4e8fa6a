//! One Linux network namespace per node, so that the nemesis's partitions
//! and packet loss cut real links instead of pretending.
//!
//! Layout (for a process with id P and `slots` nodes):
//! - `vomesh-P-sw` holds a bridge `br0`; it is the switch. Keeping the
//!   bridge out of the host's namespace keeps the host's firewall (Docker
//!   sets its FORWARD policy to DROP, and bridged packets go through it)
//!   out of the path;
//! - `vomesh-P-N` is node N's namespace: `eth0` at 10.77.S.(10+N), a veth
//!   whose other end (`pN`) is on the switch;
//! - the host reaches every node through `vmhP` at 10.77.S.1, also on the
//!   switch, so the test's clients and admin calls cross no fault.
//!
//! Faults are `iptables` rules inside a node's namespace, matching only the
//! other nodes' addresses: a partition drops them, packet loss drops a
//! random share (`-m statistic`). Delay needs the kernel's `netem` qdisc
//! (`tc qdisc … netem`), applied when the kernel has it. Everything is
//! removed when [`Namespaces`] is dropped, also during a panic.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::node::NodeOptions;

/// Why namespaces cannot be used here, or `Ok`.
pub fn available() -> Result<(), String> {
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!(
                "`{tool}` is not installed (apt-get install iproute2 iptables)"
            ));
        }
    }
    let probe = format!("vomesh-{}-probe", std::process::id());
    run("ip", &["netns", "add", &probe]).map_err(|e| format!("cannot create a namespace: {e}"))?;
    let _ = run("ip", &["netns", "del", &probe]);
    Ok(())
}

/// Namespaces for `slots` nodes and the switch between them.
pub struct Namespaces {
    prefix: String,
    subnet: [u8; 3],
    slots: usize,
    netem: bool,
}

impl Namespaces {
    /// Creates the switch and `slots` node namespaces. Call [`available`]
    /// first; a failure here panics (after cleaning up what was made).
    pub fn create(slots: usize) -> Namespaces {
        remove_stale();
        let pid = std::process::id();
        let mut namespaces = Namespaces {
            prefix: format!("vomesh-{pid}"),
            // A /24 per process, so two suites at once do not collide.
            subnet: [10, 77, (pid % 250) as u8 + 1],
            slots,
            netem: false,
        };
        let switch = namespaces.switch();
        must("ip", &["netns", "add", &switch]);
        must(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        );
        must("ip", &["-n", &switch, "link", "set", "br0", "up"]);
        for slot in 0..slots {
            let ns = namespaces.name(slot);
            let port = format!("p{slot}");
            let address = format!("{}/24", namespaces.node_address(slot));
            must("ip", &["netns", "add", &ns]);
            must(
                "ip",
                &[
                    "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            );
            must(
                "ip",
                &["-n", &switch, "link", "set", &port, "master", "br0", "up"],
            );
            must("ip", &["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        let host_link = namespaces.host_link();
        let host_address = format!("{}/24", namespaces.host_address());
        must(
            "ip",
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", "host", "netns", &switch,
            ],
        );
        must("ip", &["addr", "add", &host_address, "dev", &host_link]);
        must("ip", &["link", "set", &host_link, "up"]);
        must(
            "ip",
            &["-n", &switch, "link", "set", "host", "master", "br0", "up"],
        );
        // netem is a kernel module that container hosts often lack: probe.
        let probe = namespaces.name(0);
        let netem = run(
            "ip",
            &[
                "netns", "exec", &probe, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
                "delay", "1ms",
            ],
        )
        .is_ok();
        if netem {
            let _ = run(
                "ip",
                &[
                    "netns", "exec", &probe, "tc", "qdisc", "del", "dev", "eth0", "root",
                ],
            );
        }
        namespaces.netem = netem;
        namespaces
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The namespace of node `slot`.
    pub fn name(&self, slot: usize) -> String {
        format!("{}-{slot}", self.prefix)
    }

    fn host_link(&self) -> String {
        format!("vmh{}", std::process::id())
    }

    fn host_address(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The address of node `slot` in its namespace.
    pub fn node_address(&self, slot: usize) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, 10 + slot as u8))
    }

    /// Options that run node `slot` in its namespace, on its address.
    pub fn node_options(&self, slot: usize) -> NodeOptions {
        NodeOptions {
            host: self.node_address(slot),
            launcher: vec!["ip".into(), "netns".into(), "exec".into(), self.name(slot)],
            ..NodeOptions::default()
        }
    }

    /// Whether the kernel has `netem` (packet delay).
    pub fn has_netem(&self) -> bool {
        self.netem
    }

    fn iptables(&self, slot: usize, args: &[&str]) {
        let ns = self.name(slot);
        let mut full = vec!["netns", "exec", &ns, "iptables"];
        full.extend_from_slice(args);
        must("ip", &full);
    }

    /// Nodes in `left` and nodes in `right` drop every packet between
    /// them, both ways; links within each side (and to any node in
    /// neither) stay up.
    pub fn cut_between(&self, left: &[usize], right: &[usize]) {
        for (side, other_side) in [(left, right), (right, left)] {
            for slot in side {
                for other in other_side {
                    let peer = self.node_address(*other).to_string();
                    self.iptables(*slot, &["-A", "INPUT", "-s", &peer, "-j", "DROP"]);
                    self.iptables(*slot, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"]);
                }
            }
        }
    }

    /// Node `slot` loses `percent` % of the packets other nodes send it,
    /// and delays everything it sends by `delay_ms` where netem exists.
    pub fn degrade(&self, slot: usize, percent: u32, delay_ms: u32) {
        let probability = format!("{:.2}", f64::from(percent) / 100.0);
        for other in (0..self.slots).filter(|o| *o != slot) {
            let peer = self.node_address(other).to_string();
            self.iptables(
                slot,
                &[
                    "-A",
                    "INPUT",
                    "-s",
                    &peer,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ],
            );
        }
        if self.netem && delay_ms > 0 {
            let ns = self.name(slot);
            let delay = format!("{delay_ms}ms");
            let jitter = format!("{}ms", delay_ms / 4);
            must(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
                    "delay", &delay, &jitter,
                ],
            );
        }
    }

    /// Removes every rule and qdisc: all links work again.
    pub fn heal(&self) {
        for slot in 0..self.slots {
            self.iptables(slot, &["-F"]);
            if self.netem {
                let ns = self.name(slot);
                let _ = run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                    ],
                );
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and with them their
        // peers (the switch's ports, the host's link).
        for slot in 0..self.slots {
            let _ = run("ip", &["netns", "del", &self.name(slot)]);
        }
        let _ = run("ip", &["netns", "del", &self.switch()]);
        let _ = run("ip", &["link", "del", &self.host_link()]);
    }
}

/// Deletes the namespaces (and host link) of earlier runs whose process is
/// gone: a run killed by a signal never ran its `Drop`.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("vomesh-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
            let _ = run("ip", &["link", "del", &format!("vmh{pid}")]);
        }
    }
}

/// Runs `program args…`; `Err` with its standard error if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn must(program: &str, args: &[&str]) {
    if let Err(error) = run(program, args) {
        panic!("{error}");
    }
}
