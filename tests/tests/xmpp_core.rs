//! The XMPP core against the real binary: logins over STARTTLS and direct
//! TLS with the project's client and with slixmpp, routing between
//! sessions, and the account commands.

use std::process::Command;
use std::time::Duration;

use vomesh_broker::client::{Client, ClientError};
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::node::{DOMAIN, TestNode};
use vomesh_tests::python;

fn ping() -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", DOMAIN)
        .with_child(Element::new("ping", ns::PING))
}

#[tokio::test]
async fn client_logs_in_over_starttls_with_scram_and_pings() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut client = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("login");
    assert_eq!(client.jid().to_bare().to_string(), "alice@localhost");
    let pong = client.iq(ping()).await.expect("ping answered");
    assert_eq!(pong.attr("type"), Some("result"));
    client.close().await.expect("clean close");
}

#[tokio::test]
async fn client_logs_in_over_direct_tls() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut config = node.client_config("alice", "wonderland");
    config.server = node.xmpp_tls.to_string();
    config.direct_tls = true;
    config.resource = Some("telescope".into());
    let mut client = Client::connect(&config)
        .await
        .expect("login over direct TLS");
    assert_eq!(client.jid().to_string(), "alice@localhost/telescope");
    assert_eq!(
        client.iq(ping()).await.expect("ping").attr("type"),
        Some("result")
    );
}

#[tokio::test]
async fn wrong_password_is_not_authorized() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let result = Client::connect(&node.client_config("alice", "looking-glass")).await;
    assert!(
        matches!(&result, Err(ClientError::Auth(condition)) if condition == "not-authorized"),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn messages_are_routed_between_sessions() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice");
    let mut bob = Client::connect(&node.client_config("bob", "builder"))
        .await
        .expect("bob");
    bob.send(&Element::new("presence", ns::CLIENT))
        .await
        .expect("presence");
    // The ping round trip orders bob's presence before alice's message.
    bob.iq(ping()).await.expect("ping");
    let message = Element::new("message", ns::CLIENT)
        .with_attr("to", "bob@localhost")
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text("GRB 251125A: look at RA 12.3"));
    alice.send(&message).await.expect("send");
    let received = tokio::time::timeout(Duration::from_secs(10), bob.next_stanza())
        .await
        .expect("in time")
        .expect("a stanza");
    assert_eq!(received.name(), "message");
    assert_eq!(
        received.attr("from"),
        Some(alice.jid().to_string().as_str())
    );
    assert_eq!(
        received
            .child("body", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("GRB 251125A: look at RA 12.3")
    );
}

#[tokio::test]
async fn message_to_an_offline_user_bounces_with_service_unavailable() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice");
    let message = Element::new("message", ns::CLIENT)
        .with_attr("to", "nobody@localhost")
        .with_attr("id", "m1")
        .with_child(Element::new("body", ns::CLIENT).with_text("hello?"));
    alice.send(&message).await.expect("send");
    let bounce = alice.next_stanza().await.expect("an error");
    assert_eq!(bounce.attr("type"), Some("error"));
    let error = bounce.child("error", ns::CLIENT).expect("an error child");
    assert!(
        error
            .child("service-unavailable", ns::STANZA_ERRORS)
            .is_some(),
        "{}",
        bounce.to_xml()
    );
}

#[tokio::test]
async fn user_commands_add_list_and_remove_accounts() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let (status, listed, _) = node.cli(&["user", "list"]);
    assert!(status.success());
    assert_eq!(listed, "alice@localhost\nbob@localhost\n");
    let (status, _, stderr) = node.cli(&["user", "add", "alice@localhost", "--password", "again"]);
    assert!(!status.success());
    assert!(stderr.contains("already exists"), "{stderr}");
    let (status, _, _) = node.cli(&["user", "remove", "bob@localhost"]);
    assert!(status.success());
    let (_, listed, _) = node.cli(&["user", "list"]);
    assert_eq!(listed, "alice@localhost\n");
    let removed = Client::connect(&node.client_config("bob", "builder")).await;
    assert!(matches!(removed, Err(ClientError::Auth(_))));
}

#[tokio::test]
async fn admin_api_requires_the_bearer_token() {
    let node = TestNode::start();
    let url = format!("http://{}/api/users", node.admin);
    let unauthorized = tokio::task::spawn_blocking(move || ureq::get(&url).call())
        .await
        .expect("join");
    assert!(
        matches!(unauthorized, Err(ureq::Error::StatusCode(401))),
        "{unauthorized:?}"
    );
}

#[tokio::test]
async fn accounts_survive_a_kill_9() {
    let mut node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.kill9();
    node.restart();
    let mut client = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("login after restart");
    assert_eq!(
        client.iq(ping()).await.expect("ping").attr("type"),
        Some("result")
    );
}

#[tokio::test]
async fn sigterm_closes_streams_with_system_shutdown_and_exits_zero() {
    let mut node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut client = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("login");
    let status = tokio::task::spawn_blocking(move || {
        let status = node.stop();
        (node, status)
    });
    let closed = tokio::time::timeout(Duration::from_secs(10), client.next_stanza())
        .await
        .expect("the stream closes in time");
    assert!(
        matches!(&closed, Err(ClientError::StreamClosed(Some(c))) if c == "system-shutdown"),
        "{closed:?}"
    );
    let (_node, status) = status.await.expect("join");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn slixmpp_logs_in_with_scram_binds_pings_and_gets_every_stanza_acknowledged() {
    let python = python::python();
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let output = Command::new(python)
        .arg(python::script("login_ping.py"))
        .args([
            "alice@localhost",
            "wonderland",
            "127.0.0.1",
            &node.xmpp.port().to_string(),
        ])
        .output()
        .expect("running slixmpp");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "slixmpp failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("authenticated with SCRAM-SHA-"), "{stdout}");
    assert!(stdout.contains("bound alice@localhost/"), "{stdout}");
    assert!(
        stdout.contains("stream management enabled True"),
        "{stdout}"
    );
}
