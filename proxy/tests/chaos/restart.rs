//! A node killed and started again.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_and_restarted_keeps_every_shopper() {
    let (_redis, _origin, mut a, b) = fleet_of_two().await;
    let holder = holder_then_pause(&a, &b).await;
    // Six wait on node A (the one that dies), two on B.
    let mut line = held_line(&a, &b, 8, |i| i < 6).await;
    let issued_before = b.room("drop").await["tickets_issued"]
        .as_u64()
        .expect("issued");

    // SIGKILL node A. Its shoppers carry on at B with the same cookies.
    a.kill();
    assert_eq!(enter(&b, &holder).await, (200, true), "holder at B");
    for (_, c, w) in &mut line {
        w.observe(&b.status(c, "drop").await, "A dead, polling B");
    }
    // A comes back on the same address: its shoppers return to it, nothing lost.
    let restarted = Instant::now();
    a.restart().await;
    let took = restarted.elapsed();
    assert_eq!(
        enter(&a, &holder).await,
        (200, true),
        "holder at the restarted A"
    );
    for (n, c, w) in &mut line {
        let fg = if *n == 0 { &a } else { &b };
        w.observe(&fg.status(c, "drop").await, "A restarted");
    }
    assert_eq!(
        a.room("drop").await["paused"],
        true,
        "the pause survived the restart"
    );
    let newcomer = a.shopper();
    let t = join(&a, &newcomer).await;
    assert!(t > issued_before, "ticket {t} reused after the restart");

    // The line moves, in order, whichever node each shopper is on.
    let (admitted, entries) = release_line(&a, &b, line).await;
    assert_eq!(admitted.len(), 8);
    shopper::assert_entered_in_order(&entries, Duration::from_millis(600));
    assert_within_rate(&entries, 4.0, 0.0, "after a node restart");
    eprintln!(
        "node A killed and back in {took:?}; {} entries in order",
        entries.len()
    );
    a.assert_no_panic();
    b.assert_no_panic();
}
