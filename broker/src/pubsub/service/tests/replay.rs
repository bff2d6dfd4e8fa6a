//! Seeded random workloads: every replica that applies the same log (from
//! the start, or from a snapshot taken part-way) reaches the same state
//! and emits the same replies and notifications, and the invariants hold
//! throughout. Each run prints its seed.

use super::*;

/// xorshift64*: a tiny seeded generator, so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        let len = u64::try_from(options.len()).unwrap_or(1);
        options[usize::try_from(self.next() % len).unwrap_or(0)]
    }
}

const USERS: [&str; 3] = [ALICE, BOB, CAROL];
const NODES: [&str; 3] = ["a", "b", "c"];
const IDS: [&str; 3] = ["x", "y", "z"];

/// Archive bounds small enough that each drops entries in some of the
/// runs: a payload and id take about 24 bytes, and requests come a second
/// apart.
fn limits() -> PubsubLimits {
    PubsubLimits {
        archive_entries_per_node_max: 5,
        archive_bytes_max: 250,
        archive_age_max_seconds: 90,
        ..PubsubLimits::default()
    }
}

/// One random request from a random user.
fn random_request(h: &mut Harness, rng: &mut Rng) -> Answer {
    let user = rng.pick(&USERS);
    let node = rng.pick(&NODES);
    let id = rng.pick(&IDS);
    match rng.next() % 12 {
        0 => h.set(
            user,
            &format!("<pubsub xmlns='{PS}'><create node='{node}'/></pubsub>"),
        ),
        1 => h.set(
            user,
            &format!("<pubsub xmlns='{OWNER}'><delete node='{node}'/></pubsub>"),
        ),
        2 | 3 => h.subscribe(user, node),
        4 => h.set(
            user,
            &format!(
                "<pubsub xmlns='{PS}'><unsubscribe node='{node}' jid='{}'/></pubsub>",
                jid(user).to_bare()
            ),
        ),
        5..=7 => {
            let payload = format!("<p xmlns='urn:p'>{}</p>", rng.next() % 3);
            h.publish(user, node, Some(id), &payload)
        }
        8 => h.set(
            user,
            &format!(
                "<pubsub xmlns='{PS}'><retract node='{node}'><item id='{id}'/></retract></pubsub>"
            ),
        ),
        9 => h.set(
            user,
            &format!("<pubsub xmlns='{OWNER}'><purge node='{node}'/></pubsub>"),
        ),
        10 => {
            let max = (rng.next() % 4).to_string();
            let access = rng.pick(&["open", "authorize", "whitelist"]);
            h.set(
                user,
                &format!(
                    "<pubsub xmlns='{OWNER}'><configure node='{node}'>{}</configure></pubsub>",
                    form(
                        NODE_CONFIG_FORM,
                        &[
                            ("pubsub#max_items", &max),
                            ("pubsub#access_model", access),
                            ("pubsub#item_expire", "5")
                        ]
                    )
                ),
            )
        }
        _ => {
            let who = jid(rng.pick(&USERS)).to_bare();
            let affiliation = rng.pick(&[
                "owner",
                "publisher",
                "publish-only",
                "member",
                "none",
                "outcast",
            ]);
            h.set(
                user,
                &format!("<pubsub xmlns='{OWNER}'><affiliations node='{node}'><affiliation jid='{who}' affiliation='{affiliation}'/></affiliations></pubsub>"),
            )
        }
    }
}

fn check_all(service: &PubsubService) {
    for node in service.nodes() {
        node.debug_check();
    }
}

/// Runs the workload of `seed`; returns the archive entries its bounds
/// dropped.
fn run(seed: u64) -> ArchiveDrops {
    println!("replay seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut leader = Harness::with_limits(limits());
    let mut log: Vec<(u64, Command, Outcome)> = Vec::new();
    for step in 0..400 {
        if step % 50 == 49 {
            // The leader's periodic expiry.
            let expire = expire_command(leader.now);
            let outcome = leader.apply(&expire);
            log.push((leader.index, expire, outcome));
            continue;
        }
        let answer = random_request(&mut leader, &mut rng);
        if let Some(command) = answer.command {
            log.push((
                leader.index,
                command,
                Outcome {
                    reply: answer.reply,
                    notifications: answer.notifications,
                    published: answer.published,
                    archive_dropped: answer.archive_dropped,
                },
            ));
        }
        check_all(&leader.service);
    }
    let published = log
        .iter()
        .filter(|(_, c, o)| matches!(c.op, Some(Op::Publish(_))) && o.reply.is_ok())
        .count();
    let notified: usize = log.iter().map(|(_, _, o)| o.notifications.len()).sum();
    let dropped = log
        .iter()
        .fold(ArchiveDrops::default(), |sum, (_, _, o)| ArchiveDrops {
            node_limit: sum.node_limit + o.archive_dropped.node_limit,
            site_limit: sum.site_limit + o.archive_dropped.site_limit,
            age_limit: sum.age_limit + o.archive_dropped.age_limit,
        });
    println!(
        "{} writes, {published} accepted publishes, {notified} notifications, {dropped:?}",
        log.len()
    );
    assert!(
        published > 20 && notified > 20 && dropped.total() > 0,
        "seed {seed}: too few effects to be meaningful"
    );

    // A follower replaying the whole log.
    let mut follower = PubsubService::new(bare("pubsub.localhost"), limits());
    // A site restored from a snapshot taken half-way, then catching up.
    let half = log.len() / 2;
    let mut restored = None;
    for (position, (index, command, outcome)) in log.iter().enumerate() {
        let replayed = follower.apply(
            command,
            &Meta {
                index: *index,
                reply_wanted: true,
            },
        );
        assert_eq!(
            &replayed, outcome,
            "seed {seed}: outcome of index {index} differs"
        );
        if position + 1 == half {
            let bytes = follower.to_snapshot();
            restored = Some(
                PubsubService::from_snapshot(bare("pubsub.localhost"), limits(), &bytes).unwrap(),
            );
        } else if let Some(site) = restored.as_mut() {
            assert_eq!(
                &site.apply(
                    command,
                    &Meta {
                        index: *index,
                        reply_wanted: true,
                    }
                ),
                outcome,
                "seed {seed}"
            );
        }
    }
    assert_eq!(
        follower, leader.service,
        "seed {seed}: follower state differs"
    );
    assert_eq!(
        restored.as_ref(),
        Some(&leader.service),
        "seed {seed}: restored state differs"
    );
    dropped
}

#[test]
fn replicas_agree_on_random_workloads() {
    let dropped: Vec<ArchiveDrops> = [1, 7, 42, 2026, 0xdead_beef].map(run).into();
    // Every bound is exercised, each in some seed.
    for (bound, drops) in [
        ("node", dropped.iter().map(|d| d.node_limit).sum::<u64>()),
        ("site", dropped.iter().map(|d| d.site_limit).sum()),
        ("age", dropped.iter().map(|d| d.age_limit).sum()),
    ] {
        assert!(
            drops > 0,
            "no seed dropped archive entries at the {bound} bound"
        );
    }
}
