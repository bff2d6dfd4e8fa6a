//! The pubsub service driven by a third-party client: slixmpp's XEP-0060
//! plugin runs every use case on a VOEvent node of a real node
//! (`tests/python/pubsub_interop.py`).

use std::process::Command;

use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::samples_dir;
use vomesh_tests::python;

/// The checks the script prints, in order, as `ok <check>`.
const CHECKS: &[&str] = &[
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

#[test]
fn slixmpp_runs_every_use_case_on_a_voevent_node() {
    let python = python::python();
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    node.add_user("carol", "singer");
    let output = Command::new(python)
        .arg(python::script("pubsub_interop.py"))
        .arg(node.xmpp.ip().to_string())
        .arg(node.xmpp.port().to_string())
        .arg(samples_dir())
        .arg("alerts/gaia")
        .output()
        .expect("running pubsub_interop.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pubsub_interop.py failed:\n{stdout}\n{stderr}"
    );
    let expected: Vec<String> = CHECKS.iter().map(|check| format!("ok {check}")).collect();
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed, expected, "stderr:\n{stderr}");
}
