//! A real `vomesh serve` process on free loopback ports, with its own
//! temporary data directory and configuration file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jid::BareJid;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use vomesh_broker::client::{ClientConfig, Trust};

/// The domain test nodes serve.
pub const DOMAIN: &str = "localhost";
/// The admin token of test nodes.
pub const TOKEN: &str = "test-token";
/// How long a node gets to answer `/healthz` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `vomesh` binary of this build profile, built once per test process
/// (cargo builds test targets but not other packages' binaries). The
/// profile is that of the running executable: a test in
/// `<target>/<profile>/deps/` or a binary such as `xmpp_bench` in
/// `<target>/<profile>/`.
pub fn vomesh_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("VOMESH_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the executable has a path");
        let exe_dir = exe.parent().expect("an executable lives in a directory");
        let profile_dir = if exe_dir.file_name().is_some_and(|name| name == "deps") {
            exe_dir.parent().expect("deps/ lives in <target>/<profile>")
        } else {
            exe_dir
        };
        let target_dir = profile_dir.parent().expect("a target directory");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .args(["build", "--quiet", "-p", "vomesh-broker", "--bin", "vomesh"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // `cargo test` runs tests with the package's CARGO_* variables set
        // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME…). Build scripts watch some of
        // them (ring's reruns on CARGO_MANIFEST_DIR), so passing them on
        // would make this build and the next `cargo test` rebuild each
        // other's dependencies every time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
                build.env_remove(name.as_ref());
            }
        }
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the vomesh binary failed");
        profile_dir.join("vomesh")
    })
}

/// A port on 127.0.0.1 free for both TCP and UDP, taken below the kernel's
/// ephemeral range. Ports the OS picks (binding port 0) come from that
/// range, so between the check and the node's own bind the port could be
/// handed to an outgoing connection (a health check, a client), and the node
/// would fail with "address in use"; ports below it are never handed out.
/// Each call of a process moves on to the next port, so parallel tests do
/// not pick the same one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low_port();
    let first = 10_000u32;
    let span = u32::from(low).saturating_sub(first).max(1);
    // Processes start apart, so two test binaries rarely probe alike.
    let offset = std::process::id() % span;
    for _ in 0..span {
        let candidate = first + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(candidate) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {first} and {low}");
}

/// The first port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_low_port() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The `RUST_LOG` of test nodes: debug detail helps when a test fails.
const TEST_LOG_FILTER: &str = "vomesh_broker=debug,info";

/// What a test node's configuration adds to the defaults.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Top-level keys, e.g. `worker_threads = 1`.
    pub top_level: String,
    /// Lines of the `[xmpp]` section, e.g. `stream_open_timeout_secs = 2`.
    pub xmpp_settings: String,
    /// Whole sections appended to the file, e.g. a `[mesh]` section.
    pub extra_toml: String,
    /// The node's `RUST_LOG`.
    pub log_filter: String,
    /// The address its listeners bind (its network namespace's, when
    /// `launcher` runs it in one).
    pub host: IpAddr,
    /// A command the node is started through, e.g. `ip netns exec NS`
    /// (which execs, so the process id is still the node's).
    pub launcher: Vec<String>,
    /// Variables added to the node's environment (test-only switches such
    /// as `VOMESH_TEST_POWER_LOSS`, libfaketime's).
    pub env: Vec<(String, String)>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            top_level: String::new(),
            xmpp_settings: String::new(),
            extra_toml: String::new(),
            log_filter: TEST_LOG_FILTER.to_owned(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            launcher: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running node. Dropping it kills the process (SIGKILL).
pub struct TestNode {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log_filter: String,
    launcher: Vec<String>,
    env: Vec<(String, String)>,
    pub xmpp: SocketAddr,
    pub xmpp_tls: SocketAddr,
    pub admin: SocketAddr,
}

impl TestNode {
    /// A node with the default limits.
    pub fn start() -> TestNode {
        TestNode::start_with("")
    }

    /// A node whose `[xmpp]` section also contains `xmpp_settings` (TOML
    /// lines, e.g. `stream_open_timeout_secs = 2`).
    pub fn start_with(xmpp_settings: &str) -> TestNode {
        TestNode::start_logging(xmpp_settings, TEST_LOG_FILTER)
    }

    /// Like [`TestNode::start_with`], with `log_filter` as the node's
    /// `RUST_LOG` (benchmarks log as production does, at `info`).
    pub fn start_logging(xmpp_settings: &str, log_filter: &str) -> TestNode {
        TestNode::launch(NodeOptions {
            xmpp_settings: xmpp_settings.to_owned(),
            log_filter: log_filter.to_owned(),
            ..NodeOptions::default()
        })
    }

    /// Writes the configuration and starts the node.
    pub fn launch(options: NodeOptions) -> TestNode {
        let mut node = TestNode::prepare(options);
        node.spawn();
        node
    }

    /// Writes the configuration on free ports without starting the node
    /// (a cluster writes every member's configuration first).
    pub fn prepare(options: NodeOptions) -> TestNode {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let host = options.host;
        let address = |port| SocketAddr::new(host, port);
        let node = TestNode {
            child: None,
            log_filter: options.log_filter,
            launcher: options.launcher,
            env: options.env,
            xmpp: address(free_port()),
            xmpp_tls: address(free_port()),
            admin: address(free_port()),
            dir,
        };
        let config = format!(
            "domain = \"{DOMAIN}\"\n\
             data_dir = \"{data}\"\n\
             {top_level}\n\
             [xmpp]\n\
             listen = \"{xmpp}\"\n\
             listen_tls = \"{xmpp_tls}\"\n\
             {xmpp_settings}\n\
             [admin]\n\
             listen = \"{admin}\"\n\
             token = \"{TOKEN}\"\n\
             {extra}\n",
            data = node.data_dir().display(),
            top_level = options.top_level,
            xmpp = node.xmpp,
            xmpp_tls = node.xmpp_tls,
            admin = node.admin,
            xmpp_settings = options.xmpp_settings,
            extra = options.extra_toml,
        );
        std::fs::write(node.config_path(), config).expect("writing the node config");
        node
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `GET /api/status` (see the admin API), `None` when unreachable.
    pub fn status(&self) -> Option<serde_json::Value> {
        let mut response = ureq::get(&format!("http://{}/api/status", self.admin))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .ok()?;
        response.body_mut().read_json().ok()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("vomesh.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("vomesh.log")
    }

    /// What the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the node log");
        let (program, prefix) = match self.launcher.split_first() {
            Some((program, args)) => (PathBuf::from(program), args.to_vec()),
            None => (vomesh_bin().to_owned(), Vec::new()),
        };
        let mut command = Command::new(program);
        if !prefix.is_empty() {
            command.args(prefix).arg(vomesh_bin());
        }
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting vomesh");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://{}/healthz", self.admin);
        loop {
            if ureq::get(&url).call().is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "vomesh exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "vomesh did not become healthy:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of the running node (for reading `/proc/<pid>/`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        child.wait().expect("waiting for vomesh")
    }

    /// SIGSTOP: the process freezes (its sockets stay open, nothing is
    /// answered) until [`TestNode::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`TestNode::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Deletes the replicated state of a stopped node (its Raft log, vote
    /// and snapshot under `<data_dir>/mesh`): it starts again as a new,
    /// empty member. Its XMPP certificate stays, as a site's configured
    /// certificate would, so clients still trust it.
    pub fn wipe_mesh_state(&self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        let mesh = self.data_dir().join("mesh");
        match std::fs::remove_dir_all(&mesh) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("deleting {}: {error}", mesh.display()),
        }
    }

    /// The directory holding the node's configuration, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL, as a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process on its configuration and data: after
    /// [`TestNode::prepare`], [`TestNode::stop`] or [`TestNode::kill9`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        self.spawn();
    }

    /// Runs `vomesh ARGS… --config <this node's config>` and returns its
    /// exit status and standard output.
    pub fn cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let output = Command::new(vomesh_bin())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .output()
            .expect("running the vomesh CLI");
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Creates an account through `vomesh user add`.
    pub fn add_user(&self, localpart: &str, password: &str) {
        let jid = format!("{localpart}@{DOMAIN}");
        let (status, _, stderr) = self.cli(&["user", "add", &jid, "--password", password]);
        assert!(status.success(), "vomesh user add {jid} failed: {stderr}");
    }

    /// The node's self-signed XMPP certificate.
    pub fn certificate(&self) -> Vec<CertificateDer<'static>> {
        let path = self.data_dir().join("tls").join("xmpp.crt");
        CertificateDer::pem_file_iter(&path)
            .expect("the generated certificate exists")
            .collect::<Result<_, _>>()
            .expect("the generated certificate parses")
    }

    /// Client settings for `localpart` over STARTTLS, trusting the node's
    /// certificate (and nothing else).
    pub fn client_config(&self, localpart: &str, password: &str) -> ClientConfig {
        ClientConfig {
            jid: BareJid::new(&format!("{localpart}@{DOMAIN}")).expect("a valid JID"),
            password: password.to_owned(),
            server: self.xmpp.to_string(),
            direct_tls: false,
            resource: None,
            trust: Trust::Roots(self.certificate()),
        }
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        ureq::get(&format!("http://{}/metrics", self.admin))
            .call()
            .expect("scraping /metrics")
            .body_mut()
            .read_to_string()
            .expect("a text body")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- vomesh log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
        self.kill9();
    }
}
