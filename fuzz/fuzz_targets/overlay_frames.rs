//! Any sequence of frames from a neighbour into a joined overlay core: no panic, and the
//! active view stays within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rhizome::id::Identity;
use rhizome::overlay::{Config, Input, Overlay};

fuzz_target!(|data: &[u8]| {
    let me = Identity::from_secret_bytes([1; 32]);
    let peer = Identity::from_secret_bytes([2; 32]).peer_id();
    let mut o = Overlay::new(me, Config::default(), 0);
    o.handle(0, Input::Join { contacts: vec![peer] });
    o.handle(1, Input::ConnectionUp { peer });
    // Frames are separated by 0xfe bytes; each gets one millisecond.
    for (i, frame) in data.split(|b| *b == 0xfe).enumerate() {
        o.handle(
            2 + i as u64,
            Input::Frame {
                from: peer,
                bytes: frame.to_vec(),
            },
        );
        assert!(o.active_view().len() <= o.config().active_view_capacity);
    }
});
