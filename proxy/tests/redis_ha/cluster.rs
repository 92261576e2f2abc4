//! A real Redis Cluster: three masters and three replicas (six `redis-server`s started by the
//! test), two rooms whose hash tags land on different masters, two Flashgate nodes and a crowd
//! that keeps arriving while (a) a master hands over to its replica (`CLUSTER FAILOVER`),
//! (b) a master is killed and the cluster promotes its replica, and (c) a room's slot is
//! migrated key by key to another master. The client follows `MOVED` after (a) and (b) (the
//! slots' owner changed) and `ASK` during (c).
//!
//! The same choreography, for an operator to rehearse by hand: `loadtests/cluster-failover.sh`.

use super::*;
use testkit::RedisCluster;

/// The slot of room `room`'s keys, as the cluster computes it.
fn slot_of(cluster: &RedisCluster, room: &str) -> u16 {
    let key = format!("{{fg:{room}}}:issued");
    let node = cluster.nodes.iter().find(|n| n.running()).expect("a node");
    node.cmd(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
        .expect("KEYSLOT")
}

/// Two room ids whose slots are served by different masters.
fn rooms_on_two_masters(cluster: &RedisCluster) -> (String, String) {
    let first = "sale-0".to_owned();
    let home = cluster.master_of(slot_of(cluster, &first));
    let second = (1..100)
        .map(|i| format!("sale-{i}"))
        .find(|r| cluster.master_of(slot_of(cluster, r)) != home)
        .expect("a room on another master");
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_six_node_cluster_fails_over_twice_mid_sale() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3);
    let (a, b) = rooms_on_two_masters(&cluster);
    // The nodes connect as an ACL user with docs/redis.md's rules, on every cluster node.
    for n in &cluster.nodes {
        n.acl_user("flashgate", "fg-secret", testkit::FLASHGATE_ACL);
    }
    let seeds = cluster
        .seeds()
        .replace("redis://", "redis://flashgate:fg-secret@");
    let store = format!(
        "kind = \"redis\"\nurl = \"{seeds}\"\ncluster = true\nsnapshot_interval = \"50ms\"\n\
         batch_window = \"2ms\""
    );
    let (_origin, [n1, n2]) = fleet(store, &[a.clone(), b.clone()]).await;
    let rooms = vec![a.clone(), b.clone()];
    let crowd = Crowd::start(&[&n1, &n2], &rooms, ARRIVALS);
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = monitor_serving(crowd.nodes.clone(), rooms.clone(), stop.clone());
    let warm = Duration::from_secs(20);
    crowd.wait_entry(&a, crowd.started, warm).await;
    crowd.wait_entry(&b, crowd.started, warm).await;

    // (a) Room a's master hands over to its replica.
    let master_a = cluster.master_of(slot_of(&cluster, &a));
    let replica_a = cluster.replica_of(master_a);
    let handed = Instant::now();
    cluster.failover(replica_a);
    testkit::wait_until(
        "every node sees the new master",
        Duration::from_secs(10),
        || (cluster.master_of(slot_of(&cluster, &a)) == replica_a).then_some(()),
    )
    .await;
    let switched_a = Instant::now();
    let resumed_a = crowd
        .wait_entry(&a, switched_a, Duration::from_secs(10))
        .await;
    crowd.run_for(Duration::from_secs(2)).await;

    // (b) Room b's master dies; the cluster promotes its replica.
    let master_b = cluster.master_of(slot_of(&cluster, &b));
    let replica_b = cluster.replica_of(master_b);
    let mut cluster = cluster;
    let killed = Instant::now();
    cluster.nodes[master_b].kill();
    cluster.wait_master(replica_b, Duration::from_secs(20));
    let promoted = Instant::now();
    let resumed_b = crowd
        .wait_entry(&b, promoted, Duration::from_secs(20))
        .await;
    crowd.run_for(Duration::from_secs(2)).await;

    // (c) ASK: room a's slot moves, key by key, to another master while the crowd goes on.
    let migrating = Instant::now();
    let moved = migrate_slot(&cluster, slot_of(&cluster, &a)).await;
    let resumed_ask = crowd.wait_entry(&a, moved, Duration::from_secs(10)).await;
    crowd.run_for(Duration::from_secs(2)).await;
    let (moved_replies, ask_replies, asking) = redirections(&cluster);
    tokio::time::sleep(Duration::from_secs(2)).await; // arrivals after the last change
    let seen = crowd.finish().await;
    stop.store(true, Ordering::Relaxed);
    let samples = monitor.await.expect("monitor");
    assert_no_ticket_twice(&seen);
    for room in &rooms {
        // A failover may lose the writes of the last moment: the re-seed bound (one slice).
        assert_within_rate(room, &seen.entries[room], RATE as f64 / 60.0);
    }
    let reseeds = n1
        .metric(&format!("flashgate_store_reseeds_total{{room=\"{b}\"}}"))
        .await
        + n2.metric(&format!("flashgate_store_reseeds_total{{room=\"{b}\"}}"))
            .await;
    let (gap_a, gap_b) = (longest_gap(&seen, &a), longest_gap(&seen, &b));
    eprintln!(
        "cluster: (a) CLUSTER FAILOVER: switched {:?} after the command, room {a} admitting \
         {resumed_a:?} after that; (b) master killed: replica promoted {:?} after the kill, \
         room {b} admitting {resumed_b:?} after that ({reseeds} re-seeds); (c) slot of {a} \
         migrated key by key in {:?}, admitting {resumed_ask:?} after; longest pause between \
         entries: {a} {gap_a:?}, {b} {gap_b:?}; {samples} serving samples; answers by code {:?}",
        switched_a - handed,
        promoted - killed,
        moved - migrating,
        seen.codes
    );
    eprintln!(
        "redirections answered by the cluster: {moved_replies} MOVED, {ask_replies} ASK; \
         ASKING sent by the clients: {asking}"
    );
    assert!(
        moved_replies > 0 && ask_replies > 0 && asking > 0,
        "MOVED and ASK followed"
    );
    for (what, d) in [("(a)", resumed_a), ("(b)", resumed_b), ("(c)", resumed_ask)] {
        assert!(
            d < Duration::from_secs(3),
            "{what}: admitting again {d:?} after the switch"
        );
    }
    for n in cluster.nodes.iter().filter(|n| n.running()) {
        let acl: Vec<redis::Value> = n.cmd(redis::cmd("ACL").arg("LOG")).expect("ACL LOG");
        assert!(acl.is_empty(), "the ACL refused something: {acl:?}");
    }
    n1.assert_no_panic();
    n2.assert_no_panic();
}

/// (MOVED error replies, ASK error replies, ASKING commands) over the running nodes, from
/// `INFO errorstats` and `INFO commandstats`. The nodes' clients are the only clients sending
/// commands for rooms' keys, so these are theirs.
fn redirections(cluster: &RedisCluster) -> (u64, u64, u64) {
    let (mut moved, mut ask, mut asking) = (0, 0, 0);
    for n in cluster.nodes.iter().filter(|n| n.running()) {
        let errors: String = n
            .cmd(redis::cmd("INFO").arg("errorstats"))
            .expect("INFO errorstats");
        let count = |prefix: &str| -> u64 {
            errors
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.strip_prefix(":count="))
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or(0)
        };
        moved += count("errorstat_MOVED");
        ask += count("errorstat_ASK");
        asking += n.calls("asking");
    }
    (moved, ask, asking)
}

/// Moves `slot` to another master the way `redis-cli --cluster reshard` does: IMPORTING on the
/// target, MIGRATING on the source, each key moved with MIGRATE (clients get `ASK` for the keys
/// already moved), then the slot assigned to the target everywhere. Returns when done.
async fn migrate_slot(cluster: &RedisCluster, slot: u16) -> Instant {
    let members = cluster.members();
    let src = cluster.master_of(slot);
    let src_id = members
        .iter()
        .find(|m| m.port == cluster.nodes[src].port)
        .expect("source")
        .id
        .clone();
    let dst_m = members
        .iter()
        .find(|m| m.master && !m.failed && !m.slots.is_empty() && m.port != cluster.nodes[src].port)
        .expect("another master")
        .clone();
    let dst = cluster.index_of(dst_m.port);
    let setslot = |node: usize, how: &str, id: &str| {
        cluster.nodes[node]
            .cmd::<()>(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(how)
                    .arg(id),
            )
            .unwrap_or_else(|e| panic!("SETSLOT {how} on {node}: {e}"));
    };
    setslot(dst, "IMPORTING", &src_id);
    setslot(src, "MIGRATING", &dst_m.id);
    loop {
        let keys: Vec<String> = cluster.nodes[src]
            .cmd(redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(1))
            .expect("GETKEYSINSLOT");
        let Some(key) = keys.first() else { break };
        let () = cluster.nodes[src]
            .cmd(
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(cluster.nodes[dst].port)
                    .arg(key)
                    .arg(0)
                    .arg(5000),
            )
            .expect("MIGRATE");
        // A moment between keys, so that the crowd meets the half-moved slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every key moved, the slot not yet handed over: a command for it now gets ASK, for a
    // moment the crowd meets.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The target first, then the source; the other masters too (replicas learn by gossip).
    setslot(dst, "NODE", &dst_m.id);
    setslot(src, "NODE", &dst_m.id);
    for m in cluster.members().iter().filter(|m| m.master && !m.failed) {
        let i = cluster.index_of(m.port);
        if i != src && i != dst && cluster.nodes[i].running() {
            setslot(i, "NODE", &dst_m.id);
        }
    }
    testkit::wait_until(
        "the slot's new owner known",
        Duration::from_secs(10),
        || (cluster.master_of(slot) == dst).then_some(()),
    )
    .await;
    Instant::now()
}
