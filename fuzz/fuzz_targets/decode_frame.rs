//! Any bytes: `wire::decode` returns a message or a typed error, never panics, and what
//! it accepts re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rhizome::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode(data) {
        let again = wire::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(wire::decode(&again).expect("re-decodes"), msg);
    }
});
