//! `vomesh publish` and `vomesh subscribe` against a real node: published
//! files are acknowledged with their IVORNs, and a subscriber resuming with
//! `--since` gets what it missed and then live items, each exactly once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_tests::node::{TestNode, vomesh_bin};
use vomesh_tests::pubsub::{
    SAMPLES, VOEVENT_NS, archive_page, canonically_equal, create_iq, gaia_variant, read_xml,
    request, sample,
};

const NODE: &str = "voevents";

/// A node with a VOEvent node `voevents` created by alice, and bob.
async fn node_with_voevent_node() -> TestNode {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq(NODE, &[("pubsub#type", VOEVENT_NS)])).await;
    node
}

/// `vomesh <command> --jid … --password … --node voevents --server … --ca …`.
fn xmpp_command(node: &TestNode, command: &str, user: &str, password: &str) -> Command {
    let mut cli = Command::new(vomesh_bin());
    cli.arg(command)
        .args([
            "--jid",
            &format!("{user}@localhost"),
            "--password",
            password,
        ])
        .args(["--node", NODE, "--server", &node.xmpp.to_string()])
        .arg("--ca")
        .arg(node.data_dir().join("tls").join("xmpp.crt"))
        .stdin(Stdio::null());
    cli
}

fn publish_files(node: &TestNode, files: &[&Path]) -> Output {
    xmpp_command(node, "publish", "alice", "wonderland")
        .args(files)
        .output()
        .expect("running vomesh publish")
}

fn ivorn(path: &Path) -> String {
    read_xml(path).attr("ivorn").expect("an IVORN").to_owned()
}

#[tokio::test]
async fn publish_prints_each_file_with_its_ivorn() {
    let node = node_with_voevent_node().await;
    let files: Vec<PathBuf> = SAMPLES.iter().map(|name| sample(name)).collect();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let expected: String = files
        .iter()
        .map(|file| format!("{}\t{}\n", file.display(), ivorn(file)))
        .collect();
    let output = publish_files(&node, &paths);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, expected);

    // Publishing the same files again is safe: the same ids, no new items.
    let again = publish_files(&node, &paths);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), expected);
    let mut bob = Client::connect(&node.client_config("bob", "builder"))
        .await
        .expect("bob logs in");
    let (archived, _) = archive_page(&mut bob, NODE, &[], &[]).await;
    assert_eq!(archived.len(), 2, "{archived:?}");
    for (item, file) in archived.iter().zip(&files) {
        assert_eq!(item.item_id, ivorn(file));
        let payload = item.payload.as_ref().expect("a payload");
        assert!(
            canonically_equal(payload, &read_xml(file)),
            "{}",
            payload.to_xml()
        );
    }
}

#[tokio::test]
async fn publish_reports_a_refused_file_and_goes_on() {
    let node = node_with_voevent_node().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bad = dir.path().join("not-a-voevent.xml");
    std::fs::write(&bad, "<alert xmlns='urn:example'/>").expect("writing");
    let good = sample(SAMPLES[0]);
    let output = publish_files(&node, &[&bad, &good]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}\t{}\n", good.display(), ivorn(&good))
    );
    assert!(
        stderr.contains("not-a-voevent.xml") && stderr.contains("invalid-payload"),
        "{stderr}"
    );
}

/// Waits until `dir` holds exactly `count` `.xml` files.
fn wait_for_files(dir: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".xml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if names.len() >= count || Instant::now() > deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn subscribe_since_replays_what_followed_then_live_items_once() {
    let node = node_with_voevent_node().await;
    let events = tempfile::tempdir().expect("a temporary directory");
    let file = |fragment: &str| {
        let path = events.path().join(format!("{fragment}.xml"));
        std::fs::write(&path, gaia_variant(fragment)).expect("writing an event");
        path
    };
    let (seen, missed_1, missed_2, live) = (file("A1"), file("A2"), file("A3"), file("A4"));
    let published = publish_files(&node, &[&seen, &missed_1, &missed_2]);
    assert!(published.status.success());
    let mut bob = Client::connect(&node.client_config("bob", "builder"))
        .await
        .expect("bob logs in");
    let (archived, _) = archive_page(&mut bob, NODE, &[], &[]).await;
    let since = archived[0].archive_id.clone().expect("an archive id");

    let out = tempfile::tempdir().expect("an output directory");
    let mut subscriber = xmpp_command(&node, "subscribe", "bob", "builder")
        .args(["--since", &since, "--out"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting vomesh subscribe");
    // The replay is written once the subscription is in place.
    let replayed = wait_for_files(out.path(), 2);
    assert_eq!(replayed.len(), 2, "the replay: {replayed:?}");
    let live_published = publish_files(&node, &[&live]);
    assert!(live_published.status.success());
    let all = wait_for_files(out.path(), 3);

    let _ = Command::new("kill")
        .args(["-TERM", &subscriber.id().to_string()])
        .status();
    let output = wait_with_deadline(&mut subscriber);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let name = |path: &Path| vomesh_broker::commands::item_file_name(&ivorn(path));
    let expected = [name(&missed_1), name(&missed_2), name(&live)];
    let mut sorted = expected.to_vec();
    sorted.sort();
    assert_eq!(all, sorted, "exactly the events after --since");
    let printed: Vec<String> = stdout
        .lines()
        .map(|line| {
            Path::new(line)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(printed, expected, "each printed once, in order:\n{stderr}");
    for source in [&missed_1, &missed_2, &live] {
        let written = read_xml(&out.path().join(name(source)));
        assert!(
            canonically_equal(&written, &read_xml(source)),
            "{}",
            written.to_xml()
        );
    }
    // The live item came after the replay: its archive id is the resume point.
    let last: u64 = archived
        .last()
        .and_then(|i| i.archive_id.as_deref())
        .and_then(|id| id.parse().ok())
        .expect("numeric archive ids");
    let resume: Option<u64> = stderr
        .split("last archive id seen: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok());
    assert!(resume.is_some_and(|id| id > last), "{stderr}");
}

fn wait_with_deadline(child: &mut std::process::Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read as _;
    if let Some(out) = child.stdout.as_mut() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(err) = child.stderr.as_mut() {
        let _ = err.read_to_string(&mut stderr);
    }
    Output {
        status: child.wait().expect("the subscriber exited"),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}
