//! The three-site example of `deploy/`: certificates from
//! `deploy/init-certs.sh`, the image from `deploy/build-image.sh`, and
//! `deploy/compose.yml` with the configurations in `deploy/sites/` form a
//! mesh whose three containers turn healthy and see each other; an account
//! created at site 1 logs in at site 3 through its published port, trusting
//! the CA from `init-certs.sh`.
//!
//! Needs a Docker engine, Compose and root (init-certs.sh hands the keys to
//! the containers' uid 10001); without them the test prints why it is
//! skipped and passes. It publishes the sites on free host ports.

use std::process::Command;
use std::time::{Duration, Instant};

use jid::BareJid;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use vomesh_broker::client::{Client, ClientConfig, Trust};
use vomesh_tests::docker::{self, ComposeProject, Image};
use vomesh_tests::node::{free_port, vomesh_bin};

const SITES: [&str; 3] = ["site-1", "site-2", "site-3"];

#[tokio::test(flavor = "multi_thread")]
async fn compose_example_forms_a_healthy_three_site_mesh() {
    let compose = match docker::unavailable().map_or_else(docker::compose_command, Err) {
        Ok(command) => command,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|out| out.stdout.trim_ascii() == b"0") {
        eprintln!("skipped: init-certs.sh must run as root to chown the keys to uid 10001");
        return;
    }
    let suffix = std::process::id();
    let image = Image::build(vomesh_bin(), &format!("vomesh-compose-test:{suffix}"));
    let certs_root = tempfile::tempdir().expect("a temporary directory");
    let certs = certs_root.path().join("certs");
    let certs_text = certs.display().to_string();
    let init = Command::new(docker::deploy_dir().join("init-certs.sh"))
        .arg(vomesh_bin())
        .env("VOMESH_CERTS", &certs)
        .output()
        .expect("running deploy/init-certs.sh");
    assert!(
        init.status.success(),
        "init-certs.sh: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(
        !certs.join("site-1").join("ca.key").exists(),
        "the CA key stays out of the sites' certificates"
    );

    // Free host ports, so the test never collides with anything listening.
    let ports: Vec<(String, String)> = (1..=3)
        .flat_map(|site| {
            ["XMPP_PORT", "XMPP_TLS_PORT", "ADMIN_PORT"]
                .map(|kind| (format!("VOMESH_SITE{site}_{kind}"), free_port().to_string()))
        })
        .collect();
    let site_3_xmpp = format!(
        "127.0.0.1:{}",
        ports
            .iter()
            .find(|(name, _)| name == "VOMESH_SITE3_XMPP_PORT")
            .map(|(_, port)| port.as_str())
            .unwrap_or_default()
    );
    let mut variables = vec![
        ("VOMESH_IMAGE", image.tag.as_str()),
        ("VOMESH_CERTS", certs_text.as_str()),
    ];
    variables.extend(
        ports
            .iter()
            .map(|(name, port)| (name.as_str(), port.as_str())),
    );
    let project = ComposeProject::up(
        compose,
        &format!("vomesh-compose-test-{suffix}"),
        &variables,
    );
    project.wait_healthy(&SITES, Duration::from_secs(90));

    // Every site sees three reachable voting members, one of them leading.
    for site in SITES {
        let container = project.container(site);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = docker::docker(&[
                "exec",
                &container,
                "/usr/local/bin/vomesh",
                "status",
                "--json",
                "--config",
                "/etc/vomesh/vomesh.toml",
            ])
            .unwrap_or_else(|err| panic!("{err}"));
            let status: serde_json::Value =
                serde_json::from_str(&status).expect("vomesh status --json prints JSON");
            let members = status["members"].as_array().cloned().unwrap_or_default();
            let reachable = members
                .iter()
                .filter(|m| m["reachable"] == true && m["voter"] == true)
                .count();
            if reachable == 3 && status["leader"].is_u64() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{site} does not see three reachable voters: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    docker::docker(&[
        "exec",
        &project.container("site-1"),
        "/usr/local/bin/vomesh",
        "user",
        "add",
        "bob@alerts.example.org",
        "--password",
        "builder",
        "--config",
        "/etc/vomesh/vomesh.toml",
    ])
    .unwrap_or_else(|err| panic!("{err}"));
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.join("ca.crt"))
        .expect("init-certs.sh wrote ca.crt")
        .collect::<Result<_, _>>()
        .expect("the CA certificate parses");
    let config = ClientConfig {
        jid: BareJid::new("bob@alerts.example.org").expect("a valid JID"),
        password: "builder".to_owned(),
        server: site_3_xmpp.to_owned(),
        direct_tls: false,
        resource: None,
        trust: Trust::Roots(roots),
    };
    // Site 3 answers logins from its replica, which may trail the commit
    // at site 1 by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match Client::connect(&config).await {
            Ok(client) => break client,
            Err(err) => assert!(
                Instant::now() < deadline,
                "bob cannot log in at site 3: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    client.close().await.expect("the stream closes cleanly");
    drop(project);
    drop(image);
}
