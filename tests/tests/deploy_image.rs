//! The container image of `deploy/`, built the way this machine can build it
//! (`deploy/build-image.sh`: `FROM scratch`, the binary and its libraries):
//! a container from it runs as the unprivileged `vomesh` user, reports
//! healthy through the image's own `HEALTHCHECK`, takes an account created
//! with `vomesh user add` through the published admin port, and serves an
//! XMPP login on the published client port.
//!
//! Needs a Docker engine; without one (`docker info` fails) the test prints
//! why it is skipped and passes.

use std::time::Duration;

use jid::BareJid;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use vomesh_broker::client::{Client, ClientConfig, Trust};
use vomesh_tests::docker::{self, Container, Image};
use vomesh_tests::node::{free_port, vomesh_bin};

const TOKEN: &str = "deploy-test-token";

#[tokio::test(flavor = "multi_thread")]
async fn image_from_build_script_serves_logins_as_non_root_and_turns_healthy() {
    if let Some(reason) = docker::unavailable() {
        eprintln!("skipped: no Docker engine ({reason})");
        return;
    }
    let suffix = std::process::id();
    let image = Image::build(vomesh_bin(), &format!("vomesh-test:{suffix}"));
    assert_eq!(
        docker::docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            &image.tag
        ])
        .map(|user| user.trim().to_owned()),
        Ok("10001".to_owned()),
        "the image runs as the vomesh user"
    );

    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("vomesh.toml");
    // No [tls]: the node generates a self-signed certificate in its data
    // volume; no [mesh]: a single-node mesh.
    std::fs::write(
        &config,
        format!(
            "domain = \"localhost\"\n\
             data_dir = \"/var/lib/vomesh\"\n\
             [xmpp]\n\
             listen = \"0.0.0.0:5222\"\n\
             listen_tls = \"0.0.0.0:5223\"\n\
             [admin]\n\
             listen = \"0.0.0.0:9100\"\n\
             token = \"{TOKEN}\"\n"
        ),
    )
    .expect("writing the config");
    let (admin_port, xmpp_port) = (free_port(), free_port());
    let admin_publish = format!("127.0.0.1:{admin_port}:9100/tcp");
    let xmpp_publish = format!("127.0.0.1:{xmpp_port}:5222/tcp");
    let config_mount = format!("{}:/etc/vomesh/vomesh.toml:ro", config.display());
    let token_env = format!("VOMESH_ADMIN_TOKEN={TOKEN}");
    let container = Container::run(
        &format!("vomesh-test-{suffix}"),
        &[
            "--publish",
            &admin_publish,
            "--publish",
            &xmpp_publish,
            "--volume",
            &config_mount,
            "--env",
            &token_env,
            // The image's check, run more often than its 10 s default so
            // the test does not wait.
            "--health-interval",
            "1s",
            &image.tag,
        ],
    );
    container.wait_healthy(Duration::from_secs(60));

    let top = docker::docker(&["top", &container.name, "-o", "pid,uid,comm"])
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        top.lines()
            .skip(1)
            .all(|line| line.split_whitespace().nth(1) == Some("10001")),
        "every process of the container runs as uid 10001:\n{top}"
    );

    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let status = std::process::Command::new(vomesh_bin())
        .args(["status", "--admin", &admin_url, "--token", TOKEN])
        .output()
        .expect("running vomesh status");
    assert!(
        status.status.success(),
        "vomesh status through the published admin port: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let added = std::process::Command::new(vomesh_bin())
        .args(["user", "add", "alice@localhost", "--password", "wonderland"])
        .args(["--admin", &admin_url, "--token", TOKEN])
        .output()
        .expect("running vomesh user add");
    assert!(
        added.status.success(),
        "vomesh user add: {}",
        String::from_utf8_lossy(&added.stderr)
    );

    // The certificate the node generated in its volume.
    let cert_path = dir.path().join("xmpp.crt");
    docker::docker(&[
        "cp",
        &format!("{}:/var/lib/vomesh/tls/xmpp.crt", container.name),
        &cert_path.display().to_string(),
    ])
    .unwrap_or_else(|err| panic!("{err}"));
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .expect("the copied certificate")
        .collect::<Result<_, _>>()
        .expect("the certificate parses");

    let client = Client::connect(&ClientConfig {
        jid: BareJid::new("alice@localhost").expect("a valid JID"),
        password: "wonderland".to_owned(),
        server: format!("127.0.0.1:{xmpp_port}"),
        direct_tls: false,
        resource: Some("deploy-test".to_owned()),
        trust: Trust::Roots(roots),
    })
    .await
    .expect("alice logs in at the container over STARTTLS");
    assert_eq!(client.jid().to_string(), "alice@localhost/deploy-test");
    client.close().await.expect("the stream closes cleanly");
}
