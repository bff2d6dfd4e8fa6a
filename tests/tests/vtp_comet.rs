//! The VTP bridge against Comet, the reference VOEvent Transport Protocol
//! broker, run as a real peer (installed into the tests' virtualenv):
//! Comet's `comet-sendvo` submits to vomesh's author port and an XMPP
//! subscriber receives the event; a Comet subscriber on vomesh's broadcast
//! port receives events published over XMPP, byte for byte; vomesh ingests
//! from a Comet broadcaster without sending its events back; two sites
//! subscribed to one Comet broker store one copy. A last test measures the
//! author port's submit→ack latency and the broadcast port's rate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use vomesh_broker::client::Client;
use vomesh_broker::pubsub::payload;
use vomesh_broker::vtp::frame::{read_frame, write_frame};
use vomesh_broker::vtp::message::{self, Incoming, Role};
use vomesh_broker::xml::{Element, ParserLimits};
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::measure::{gauge, millis, percentile};
use vomesh_tests::node::{NodeOptions, TestNode, free_port};
use vomesh_tests::pubsub::{
    EVENT_NS, SAMPLES, gaia_variant, next_event, publish, read_xml, request, sample, service,
    subscribe_iq,
};
use vomesh_tests::python;

/// The node Gaia alerts are routed to (`voevent/<authority>/<stream>`).
const GAIA_NODE: &str = "voevent/gaia.cam.uk/alerts";
const USER: &str = "astro";
const PASSWORD: &str = "correct horse";
/// How long Comet and vomesh get to find each other or pass an event on.
const WAIT: Duration = Duration::from_secs(30);
const LIMITS: ParserLimits = ParserLimits {
    stanza_bytes_max: 1 << 20,
    depth_max: 64,
    attributes_max: 64,
};

/// Where Comet's save-event plugin writes, relative to its working directory.
const COMET_EVENTS_DIR: &str = "events";

/// A `[vtp]` section on free ports.
struct VtpPorts {
    author: SocketAddr,
    broadcast: SocketAddr,
}

impl VtpPorts {
    fn new() -> VtpPorts {
        VtpPorts {
            author: SocketAddr::from(([127, 0, 0, 1], free_port())),
            broadcast: SocketAddr::from(([127, 0, 0, 1], free_port())),
        }
    }

    fn section(&self, local_ivo: &str, upstream: &[String], extra: &str) -> String {
        let upstream: Vec<String> = upstream.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[vtp]\n\
             author_listen = \"{}\"\n\
             broadcast_listen = \"{}\"\n\
             local_ivo = \"{local_ivo}\"\n\
             upstream = [{}]\n\
             {extra}\n",
            self.author,
            self.broadcast,
            upstream.join(", ")
        )
    }
}

fn vtp_node(ports: &VtpPorts, upstream: &[String], extra: &str) -> TestNode {
    let node = TestNode::launch(NodeOptions {
        extra_toml: ports.section("ivo://test.vomesh/site", upstream, extra),
        ..NodeOptions::default()
    });
    node.add_user(USER, PASSWORD);
    node
}

/// A Comet process (`twistd -n comet …`) in a directory of its own, killed
/// when dropped.
struct Comet {
    child: Child,
    dir: tempfile::TempDir,
}

impl Comet {
    fn start(args: &[String]) -> Comet {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("eventdb")).expect("eventdb dir");
        std::fs::create_dir(dir.path().join(COMET_EVENTS_DIR)).expect("events dir");
        let log = std::fs::File::create(dir.path().join("comet.log")).expect("comet log");
        let child = Command::new(python::program("twistd"))
            .args(["-n", "--pidfile=", "comet", "-v"])
            .arg(format!(
                "--eventdb={}",
                dir.path().join("eventdb").display()
            ))
            .args(args)
            // Comet takes its save-event lock files in the working directory.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting Comet");
        Comet { child, dir }
    }

    fn events_dir(&self) -> PathBuf {
        self.dir.path().join(COMET_EVENTS_DIR)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("comet.log")).unwrap_or_default()
    }
}

impl Drop for Comet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Comet log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Arguments of a Comet broker that takes events from local authors on
/// `author` and broadcasts them on `broadcast`.
fn comet_broker_args(author: u16, broadcast: u16) -> Vec<String> {
    vec![
        "--local-ivo=ivo://test.comet/broker".into(),
        "--receive".into(),
        format!("--receive-port={author}"),
        "--author-whitelist=127.0.0.0/8".into(),
        "--broadcast".into(),
        format!("--broadcast-port={broadcast}"),
        // No test events: the tests count what arrives.
        "--broadcast-test-interval=0".into(),
    ]
}

/// Submits `file` with Comet's `comet-sendvo`; true when it was acked.
fn comet_sendvo(port: u16, file: &Path) -> bool {
    Command::new(python::program("comet-sendvo"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--file"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running comet-sendvo")
        .success()
}

/// Writes `text` to a file in `dir` and returns its path.
fn event_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing an event file");
    path
}

/// Polls until `check` holds, or panics naming `what`.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `vomesh_vtp_events_in_total` of the upstream on local port `port`.
fn upstream_events_in(port: u16) -> String {
    format!("vomesh_vtp_events_in_total{{source=\"upstream\",peer=\"127.0.0.1:{port}\"}}")
}

fn metric(node: &TestNode, name: &str) -> f64 {
    gauge(&node.metrics(), name).unwrap_or(0.0)
}

async fn subscriber(node: &TestNode, node_id: &str) -> Client {
    let mut client = Client::connect(&node.client_config(USER, PASSWORD))
        .await
        .expect("the subscriber logs in");
    // Notifications go to available resources: send presence, and order
    // it before the subscription with the round trip that follows.
    client
        .send(&Element::new("presence", vomesh_broker::xmpp::ns::CLIENT))
        .await
        .expect("presence");
    let jid = format!("{USER}@localhost");
    request(&mut client, subscribe_iq(node_id, &jid)).await;
    client
}

fn notified_ivorn(message: &Element) -> Option<String> {
    message
        .child("event", EVENT_NS)?
        .child("items", EVENT_NS)?
        .child("item", EVENT_NS)?
        .attr("id")
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn comet_sendvo_submission_is_acked_after_commit_and_reaches_an_xmpp_subscriber() {
    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "");
    let files = tempfile::tempdir().unwrap();
    // The first event creates the stream's VOEvent node.
    assert!(comet_sendvo(ports.author.port(), &sample(SAMPLES[0])));
    let mut client = subscriber(&node, GAIA_NODE).await;
    let second = event_file(files.path(), "b.xml", &gaia_variant("Gaia16aad"));
    assert!(
        comet_sendvo(ports.author.port(), &second),
        "comet-sendvo got no ack"
    );
    let event = next_event(&mut client).await;
    assert_eq!(
        notified_ivorn(&event).as_deref(),
        Some("ivo://gaia.cam.uk/alerts#Gaia16aad")
    );
    // A resubmission is acked again and stored once.
    assert!(comet_sendvo(ports.author.port(), &second));
    let metrics = node.metrics();
    assert_eq!(gauge(&metrics, "vomesh_pubsub_published_total"), Some(2.0));
    assert_eq!(
        gauge(&metrics, "vomesh_vtp_acks_total{direction=\"sent\"}"),
        Some(3.0)
    );
}

/// Submits `body` to the author port as Comet's sender does; the answer.
async fn submit(author: SocketAddr, body: &[u8]) -> message::Transport {
    let mut stream = TcpStream::connect(author)
        .await
        .expect("connecting to the author port");
    write_frame(&mut stream, body)
        .await
        .expect("sending the event");
    let answer = read_frame(&mut stream, 1 << 20)
        .await
        .expect("an answer")
        .expect("an answer before close");
    match message::parse(&answer, LIMITS) {
        Ok(Incoming::Transport(answer)) => answer,
        other => panic!("not a Transport answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_events_and_unlisted_authors_get_a_nak_with_the_reason() {
    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "");
    let bad_ivorn =
        gaia_variant("Gaia16aac").replace("ivo://gaia.cam.uk/alerts#", "ivo://gaia.cam.uk#");
    let answer = submit(ports.author, bad_ivorn.as_bytes()).await;
    assert_eq!(answer.role, Role::Nak);
    assert!(
        answer
            .result
            .as_deref()
            .unwrap_or_default()
            .contains("has no /resource-key"),
        "{answer:?}"
    );
    let bad_role = gaia_variant("x").replacen("role=\"observation\"", "role=\"rumour\"", 1);
    let answer = submit(ports.author, bad_role.as_bytes()).await;
    assert_eq!(answer.role, Role::Nak);
    assert!(answer.result.unwrap_or_default().contains("rumour"));
    drop(node);

    // Only 10.0.0.0/8 may author: loopback is refused, and told why.
    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "author_allow = [\"10.0.0.0/8\"]");
    let answer = submit(ports.author, gaia_variant("y").as_bytes()).await;
    assert_eq!(answer.role, Role::Nak);
    assert!(answer.result.unwrap_or_default().contains("allow-list"));
    let metrics = node.metrics();
    assert_eq!(
        gauge(
            &metrics,
            "vomesh_vtp_naks_total{direction=\"sent\",reason=\"not-allowed\"}"
        ),
        Some(1.0)
    );
    // Registered when the node starts, the counter is exported at 0.
    assert_eq!(gauge(&metrics, "vomesh_pubsub_published_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn comet_subscriber_receives_events_published_over_xmpp_byte_for_byte() {
    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "");
    let comet = Comet::start(&[
        "--local-ivo=ivo://test.comet/subscriber".into(),
        format!("--remote=127.0.0.1:{}", ports.broadcast.port()),
        "--save-event".into(),
        format!("--save-event-directory={}", COMET_EVENTS_DIR),
    ]);
    wait_until("Comet to subscribe", || {
        metric(&node, "vomesh_vtp_peers{role=\"subscriber\"}") == 1.0
    })
    .await;
    let mut client = Client::connect(&node.client_config(USER, PASSWORD))
        .await
        .expect("the publisher logs in");
    let packet = read_xml(&sample(SAMPLES[0]));
    let id = publish(&mut client, GAIA_NODE, None, packet.clone()).await;
    assert_eq!(id, "ivo://gaia.cam.uk/alerts#Gaia16aac");
    let saved = comet.events_dir().join("ivo__gaia.cam.uk_alertsGaia16aac");
    wait_until("Comet to save the event", || saved.exists()).await;
    wait_until("Comet's ack", || {
        metric(&node, "vomesh_vtp_acks_total{direction=\"received\"}") >= 1.0
    })
    .await;
    // As published: the declaration, then the payload the mesh stored.
    let expected = format!("{}{}", message::DECLARATION, payload::serialize(&packet));
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn vomesh_ingests_from_a_comet_broadcaster_and_does_not_send_its_events_back() {
    // Comet receives from authors, broadcasts, and subscribes to vomesh;
    // vomesh subscribes to Comet: a loop both must survive.
    let ports = VtpPorts::new();
    let (comet_author, comet_broadcast) = (free_port(), free_port());
    let node = vtp_node(&ports, &[format!("127.0.0.1:{comet_broadcast}")], "");
    let mut args = comet_broker_args(comet_author, comet_broadcast);
    args.push(format!("--remote=127.0.0.1:{}", ports.broadcast.port()));
    let comet = Comet::start(&args);
    wait_until("vomesh and Comet to subscribe to each other", || {
        let metrics = node.metrics();
        gauge(&metrics, "vomesh_vtp_peers{role=\"upstream\"}") == Some(1.0)
            && gauge(&metrics, "vomesh_vtp_peers{role=\"subscriber\"}") == Some(1.0)
    })
    .await;
    let files = tempfile::tempdir().unwrap();
    let event = event_file(files.path(), "e.xml", &gaia_variant("Gaia16aae"));
    assert!(
        comet_sendvo(comet_author, &event),
        "Comet did not ack the author"
    );
    wait_until("vomesh to ingest Comet's event", || {
        metric(&node, "vomesh_pubsub_published_total") == 1.0
    })
    .await;
    wait_until("the loop to be cut", || {
        metric(&node, "vomesh_vtp_loops_prevented_total") == 1.0
    })
    .await;
    let metrics = node.metrics();
    assert_eq!(
        gauge(&metrics, &upstream_events_in(comet_broadcast)),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "vomesh_vtp_events_out_total{peer=\"127.0.0.1\"}"),
        None
    );
    // Stored under its IVORN in the stream's node, visible over XMPP.
    let mut client = subscriber(&node, GAIA_NODE).await;
    let items = request(
        &mut client,
        vomesh_tests::pubsub::iq(
            "get",
            Element::new("pubsub", vomesh_tests::pubsub::PUBSUB_NS).with_child(
                Element::new("items", vomesh_tests::pubsub::PUBSUB_NS).with_attr("node", GAIA_NODE),
            ),
        ),
    )
    .await;
    assert!(
        items
            .to_xml()
            .contains("ivo://gaia.cam.uk/alerts#Gaia16aae")
    );
    assert!(!comet.log().contains("Traceback"), "{}", comet.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sites_subscribed_to_one_comet_broker_store_one_copy() {
    let (comet_author, comet_broadcast) = (free_port(), free_port());
    let _comet = Comet::start(&comet_broker_args(comet_author, comet_broadcast));
    let upstream = [format!("127.0.0.1:{comet_broadcast}")];
    let ports = [VtpPorts::new(), VtpPorts::new()];
    // Sites 1 and 2 both subscribe to Comet; site 3 has no bridge.
    let bridges: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| p.section(&format!("ivo://test.vomesh/site{i}"), &upstream, ""))
        .collect();
    let cluster = TestCluster::start_custom(
        3,
        "",
        Box::new(move |i| NodeOptions {
            extra_toml: bridges.get(i).cloned().unwrap_or_default(),
            log_filter: "vomesh_broker=debug,info".to_owned(),
            ..NodeOptions::default()
        }),
    );
    cluster.add_user(USER, PASSWORD);
    for site in &cluster.nodes[..2] {
        wait_until("both sites to subscribe to Comet", || {
            metric(site, "vomesh_vtp_peers{role=\"upstream\"}") == 1.0
        })
        .await;
    }
    let files = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    for n in 0..5 {
        let text = gaia_variant(&format!("Redundant{n}"));
        sent.push(event_file(files.path(), &format!("{n}.xml"), &text));
    }
    // A second version of the first event: a new packet under its IVORN.
    let revised = std::fs::read_to_string(&sent[0]).unwrap().replacen(
        "magnitude 17.32",
        "magnitude 17.33",
        1,
    );
    sent.push(event_file(files.path(), "revised.xml", &revised));
    for file in &sent {
        assert!(comet_sendvo(comet_author, file));
    }
    let events_in = upstream_events_in(comet_broadcast);
    for site in &cluster.nodes[..2] {
        wait_until("each site to receive every event from Comet", || {
            metric(site, &events_in) == 6.0
        })
        .await;
    }
    // Every site stored each packet once: 6 publishes, 5 current items.
    let commit = cluster.nodes[0]
        .status()
        .and_then(|s| s["commit_index"].as_u64())
        .unwrap();
    cluster.wait_applied(commit, WAIT);
    for site in &cluster.nodes {
        assert_eq!(metric(site, "vomesh_pubsub_published_total"), 6.0);
        assert_eq!(metric(site, "vomesh_pubsub_items"), 5.0);
    }
    let mut client = Client::connect(&cluster.nodes[2].client_config(USER, PASSWORD))
        .await
        .expect("login at the site without a bridge");
    let archive = vomesh_tests::history::read_archive(&mut client, &service(), GAIA_NODE, 50, WAIT)
        .await
        .expect("the archive");
    let mut ids: Vec<&str> = archive.iter().map(|i| i.item_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert_eq!(
        ids.iter().filter(|id| id.ends_with("#Redundant0")).count(),
        2
    );
}

/// A VTP subscriber written against the protocol (as Comet's behaves):
/// names itself, answers iamalive, acks every event; returns when `count`
/// events arrived, with the instant of each.
async fn subscribe_and_ack(broadcast: SocketAddr, count: usize) -> Vec<Instant> {
    let mut stream = TcpStream::connect(broadcast)
        .await
        .expect("connecting to the broadcast port");
    let local = "ivo://test.bench/subscriber";
    let mut arrivals = Vec::with_capacity(count);
    while arrivals.len() < count {
        let body = read_frame(&mut stream, 1 << 20)
            .await
            .expect("a message")
            .expect("the broker keeps the connection");
        let now = vomesh_broker::clock::now_micros();
        let reply = match message::parse(&body, LIMITS).expect("a VTP message") {
            Incoming::VoEvent(root) => {
                arrivals.push(Instant::now());
                message::ack(local, root.attr("ivorn").unwrap_or_default(), now)
            }
            Incoming::Transport(t) if t.role == Role::Authenticate => {
                message::authenticate_response(local, t.origin.as_deref().unwrap_or_default(), now)
            }
            Incoming::Transport(t) => {
                message::iamalive_response(local, t.origin.as_deref().unwrap_or_default(), now)
            }
        };
        write_frame(&mut stream, &reply).await.expect("answering");
    }
    arrivals
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_author_ack_latency_and_broadcast_rate() {
    const SEQUENTIAL: usize = 100;
    const CONCURRENT: usize = 400;
    const AUTHORS: usize = 16;
    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "");
    let receiving = tokio::spawn(subscribe_and_ack(ports.broadcast, SEQUENTIAL + CONCURRENT));
    wait_until("the bench subscriber", || {
        metric(&node, "vomesh_vtp_peers{role=\"subscriber\"}") == 1.0
    })
    .await;

    // Submit → ack, one author at a time: the ack waits for the commit.
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for n in 0..SEQUENTIAL {
        let started = Instant::now();
        let answer = submit(ports.author, gaia_variant(&format!("Seq{n}")).as_bytes()).await;
        latencies.push(started.elapsed());
        assert_eq!(answer.role, Role::Ack, "{answer:?}");
    }
    latencies.sort_unstable();

    // Many authors at once: what the broadcast port passes on per second.
    let started = Instant::now();
    let mut authors = tokio::task::JoinSet::new();
    for a in 0..AUTHORS {
        let author = ports.author;
        authors.spawn(async move {
            for n in (a..CONCURRENT).step_by(AUTHORS) {
                let answer = submit(author, gaia_variant(&format!("Par{n}")).as_bytes()).await;
                assert_eq!(answer.role, Role::Ack, "{answer:?}");
            }
        });
    }
    while let Some(done) = authors.join_next().await {
        done.expect("an author task");
    }
    let arrivals = tokio::time::timeout(WAIT, receiving)
        .await
        .expect("every event broadcast in time")
        .expect("the subscriber task");
    let last = arrivals.last().copied().expect("arrivals");
    let rate = CONCURRENT as f64 / last.duration_since(started).as_secs_f64();
    println!(
        "VTP author submit→ack over {SEQUENTIAL} sequential events: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} build)",
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.90)),
        millis(percentile(&latencies, 0.99)),
        millis(*latencies.last().unwrap()),
        vomesh_tests::measure::build_profile(),
    );
    println!(
        "VTP broadcast port: {CONCURRENT} events from {AUTHORS} concurrent authors delivered and acked at {rate:.0} events/s"
    );
    assert_eq!(
        metric(&node, "vomesh_pubsub_published_total"),
        (SEQUENTIAL + CONCURRENT) as f64
    );
}

/// Reads until the broker closes the connection; the messages read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while let Ok(Some(body)) = read_frame(stream, 1 << 20).await {
        messages.push(body);
    }
    messages
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_subscriber_is_dropped_and_unlisted_networks_are_refused() {
    let ports = VtpPorts::new();
    let node = vtp_node(
        &ports,
        &[],
        "iamalive_interval_secs = 1\nsubscriber_reply_timeout_secs = 2\n",
    );
    let mut silent = TcpStream::connect(ports.broadcast).await.unwrap();
    // It hears authenticate and iamalives, answers nothing, and is dropped.
    let heard = tokio::time::timeout(WAIT, read_until_closed(&mut silent))
        .await
        .expect("the broker drops a silent subscriber");
    let roles: Vec<Role> = heard
        .iter()
        .map(|body| match message::parse(body, LIMITS) {
            Ok(Incoming::Transport(t)) => t.role,
            other => panic!("unexpected message {other:?}"),
        })
        .collect();
    assert_eq!(roles.first(), Some(&Role::Authenticate));
    assert!(roles[1..].iter().all(|r| *r == Role::IAmAlive) && roles.len() >= 2);
    wait_until("the drop to be counted", || {
        metric(
            &node,
            "vomesh_vtp_subscribers_dropped_total{reason=\"timeout\"}",
        ) == 1.0
    })
    .await;
    drop(node);

    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "subscriber_allow = [\"10.0.0.0/8\"]");
    let mut outsider = TcpStream::connect(ports.broadcast).await.unwrap();
    let heard = tokio::time::timeout(WAIT, read_until_closed(&mut outsider))
        .await
        .expect("the broker closes an unlisted subscriber's connection");
    assert!(heard.is_empty());
    assert_eq!(
        metric(
            &node,
            "vomesh_vtp_subscribers_dropped_total{reason=\"not-allowed\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn comet_subscriber_xpath_filter_selects_the_events_it_receives() {
    let ports = VtpPorts::new();
    let node = vtp_node(&ports, &[], "");
    let comet = Comet::start(&[
        "--local-ivo=ivo://test.comet/filtered".into(),
        format!("--remote=127.0.0.1:{}", ports.broadcast.port()),
        "--filter=//Param[@name='averagemag' and @value > 17]".into(),
        "--save-event".into(),
        format!("--save-event-directory={COMET_EVENTS_DIR}"),
    ]);
    wait_until("Comet to subscribe", || {
        metric(&node, "vomesh_vtp_peers{role=\"subscriber\"}") == 1.0
    })
    .await;
    // SWIFT has no such Param; Gaia16aac's averagemag is 17.32.
    for sample_name in [SAMPLES[1], SAMPLES[0]] {
        let packet = std::fs::read(sample(sample_name)).unwrap();
        assert_eq!(submit(ports.author, &packet).await.role, Role::Ack);
    }
    let gaia = comet.events_dir().join("ivo__gaia.cam.uk_alertsGaia16aac");
    wait_until("Comet to save the matching event", || gaia.exists()).await;
    let saved: Vec<_> = std::fs::read_dir(comet.events_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(saved, [gaia.file_name().unwrap()]);
    assert_eq!(metric(&node, "vomesh_vtp_events_filtered_total"), 1.0);
    // Submitted over VTP: Comet saved the author's bytes.
    assert_eq!(
        std::fs::read(&gaia).unwrap(),
        std::fs::read(sample(SAMPLES[0])).unwrap()
    );
}
