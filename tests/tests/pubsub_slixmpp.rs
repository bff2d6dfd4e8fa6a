//! The pubsub service driven by a third-party client: slixmpp's XEP-0060
//! plugin runs every use case on a VOEvent node of a real node
//! (`tests/python/pubsub_interop.py`), then access models and discovery
//! (`tests/python/pubsub_access.py`).

use std::process::Command;

use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::samples_dir;
use vomesh_tests::python;

/// The checks the script prints, in order, as `ok <check>`.
const INTEROP_CHECKS: &[&str] = &[
    "create node with configuration",
    "get configuration",
    "set configuration",
    "subscribe",
    "publish with the IVORN as id",
    "notification carries the published VOEvent",
    "notification has delay and stanza-id",
    "identical republication answers the same id",
    "publish without id gets the IVORN",
    "identical republication is not notified",
    "second VOEvent received unchanged",
    "invalid VOEvent is bad-request + invalid-payload",
    "non-VOEvent payload is bad-request + invalid-payload",
    "retrieve all items",
    "retrieve an item by id",
    "retrieve the latest item with max_items",
    "owner grants publisher",
    "publisher can publish",
    "retract notifies the subscriber",
    "retracted item is gone",
    "outcast cannot subscribe",
    "purge notifies the subscriber",
    "purge removes every item",
    "delete notifies the subscriber",
    "deleted node is gone",
    "no further notification",
];

const ACCESS_CHECKS: &[&str] = &[
    "service is a pubsub service",
    "node is a leaf",
    "subscription to an authorize node is pending",
    "owner gets an authorization request",
    "approved subscriber is told it is subscribed",
    "approved subscriber is notified",
    "unmet publish-options precondition",
    "met publish-options precondition publishes",
    "non-subscriber cannot list an authorize node's items",
    "disco#items lists the node's items",
    "access model changed to whitelist",
    "non-member cannot subscribe to a whitelist node",
    "member subscribes to a whitelist node",
    "subscription options form",
    "unsubscribe removes the subscription",
];

/// Runs `script HOST PORT ARGS…` against a fresh node with the accounts
/// alice, bob and carol, and asserts it printed exactly `checks`.
fn run_script(script: &str, args: &[&std::ffi::OsStr], checks: &[&str]) {
    let python = python::python();
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    node.add_user("carol", "singer");
    let output = Command::new(python)
        .arg(python::script(script))
        .arg(node.xmpp.ip().to_string())
        .arg(node.xmpp.port().to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    let expected: Vec<String> = checks.iter().map(|check| format!("ok {check}")).collect();
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed, expected, "stderr:\n{stderr}");
}

#[test]
fn slixmpp_runs_every_use_case_on_a_voevent_node() {
    let samples = samples_dir();
    run_script(
        "pubsub_interop.py",
        &[samples.as_os_str(), "alerts/gaia".as_ref()],
        INTEROP_CHECKS,
    );
}

#[test]
fn slixmpp_sees_access_models_preconditions_and_discovery() {
    run_script(
        "pubsub_access.py",
        &["alerts/private".as_ref()],
        ACCESS_CHECKS,
    );
}
