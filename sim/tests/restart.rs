//! A signaling-server restart must not split a room (see `rhizome_sim::restart`): peers
//! that lost their session reconnect in the background, spread over a doubling window,
//! register again, and probe their first sample for peers of another component. The
//! 1,000-peer run is the example `restart` (figures in docs/BENCHMARKS.md).

use rhizome::overlay::dht::Mode;
use rhizome_sim::restart::{restart, Restart};

#[test]
fn newcomers_after_a_server_restart_join_the_room_that_outlived_it() {
    // A room of 100, server down 5 minutes (10 peers leave meanwhile), 20 newcomers over
    // the 10 s after it returns.
    for mode in [Mode::Unstructured, Mode::Hybrid] {
        let o = restart(&Restart {
            seed: 1,
            mode,
            settled: 100,
            newcomers: 20,
            down_ms: 300_000,
            watch_ms: 60_000,
        });
        assert_eq!(o.online, 110);
        assert!(
            o.merged_after_ms.is_some(),
            "{mode:?}: not one component a minute after the server returned \
             ({} of {} registered again)",
            o.registered,
            o.online
        );
        // Every peer registered again within the largest reconnection window (30 s) ...
        assert!(
            o.all_registered_after_ms.is_some_and(|t| t <= 35_000),
            "{mode:?}: {:?}",
            o.all_registered_after_ms
        );
        // ... spread over it, not in one burst (90 survivors and 2 newcomers a second).
        assert!(
            o.peak_joins_per_s <= 20,
            "{mode:?}: {} registrations in one second",
            o.peak_joins_per_s
        );
        eprintln!("{mode:?}: {o:?}");
    }
}
