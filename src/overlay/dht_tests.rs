//! Unit tests of the DHT half of one overlay core: records, limits, modes, the wire form.
//! Routing and lookups across many peers are tested in `sim/tests/dht.rs`.

use super::dht::*;
use super::*;

fn writer() -> Identity {
    Identity::from_secret_bytes([7; 32])
}

fn overlay(mode: Mode) -> Overlay {
    let config = Config {
        mode,
        ..Config::default()
    };
    let mut o = Overlay::new(Identity::from_secret_bytes([1; 32]), config, 5);
    let contact = Identity::from_secret_bytes([2; 32]).peer_id();
    o.handle(
        0,
        Input::Join {
            contacts: vec![contact],
        },
    );
    o
}

fn dht_events(out: &[Output]) -> Vec<DhtEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(Event::Dht(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_valid_record_is_stored_and_found_by_key() {
    let mut o = overlay(Mode::Hybrid);
    let r = Record::sign(&writer(), b"name".to_vec(), 1, 60_000, b"v".to_vec());
    assert_eq!(o.store_record(r.clone(), 0), Ok(()));
    assert_eq!(
        o.stored_record(&Key::for_record(&writer().peer_id(), b"name")),
        Some(&r)
    );
}

#[test]
fn records_with_bad_signatures_are_refused() {
    let mut o = overlay(Mode::Hybrid);
    let mut r = Record::sign(&writer(), b"name".to_vec(), 1, 60_000, b"v".to_vec());
    r.value = b"forged".to_vec();
    assert_eq!(o.store_record(r, 0), Err(RecordError::BadSignature));
    // Someone else's signature under the writer's name.
    let mut r = Record::sign(
        &Identity::from_secret_bytes([8; 32]),
        b"name".to_vec(),
        1,
        60_000,
        b"v".to_vec(),
    );
    r.writer = writer().peer_id();
    assert_eq!(o.store_record(r, 0), Err(RecordError::BadSignature));
    assert_eq!(o.stored_records(), 0);
}

#[test]
fn records_with_old_sequence_numbers_are_refused() {
    let mut o = overlay(Mode::Hybrid);
    let sign = |seq, v: &[u8]| Record::sign(&writer(), b"n".to_vec(), seq, 60_000, v.to_vec());
    assert_eq!(o.store_record(sign(5, b"five"), 0), Ok(()));
    assert_eq!(
        o.store_record(sign(4, b"four"), 0),
        Err(RecordError::Stale { have: 5, got: 4 })
    );
    // Same number, different value: a conflict, refused too.
    assert_eq!(
        o.store_record(sign(5, b"other"), 0),
        Err(RecordError::Stale { have: 5, got: 5 })
    );
    // The same record again is a refresh; a newer one wins.
    assert_eq!(o.store_record(sign(5, b"five"), 0), Ok(()));
    assert_eq!(o.store_record(sign(6, b"six"), 0), Ok(()));
    let key = Key::for_record(&writer().peer_id(), b"n");
    assert_eq!(o.stored_record(&key).map(|r| r.seq), Some(6));
}

#[test]
fn records_over_the_size_limits_are_refused() {
    let mut o = overlay(Mode::Hybrid);
    let big = vec![0u8; MAX_RECORD_VALUE + 1];
    let r = Record::sign(&writer(), b"n".to_vec(), 1, 60_000, big);
    assert!(matches!(
        o.store_record(r, 0),
        Err(RecordError::TooLarge { .. })
    ));
    let r = Record::sign(&writer(), vec![1; MAX_RECORD_NAME + 1], 1, 60_000, vec![]);
    assert!(matches!(
        o.store_record(r, 0),
        Err(RecordError::TooLarge { .. })
    ));
    let r = Record::sign(&writer(), b"n".to_vec(), 1, u64::MAX, vec![]);
    assert!(matches!(
        o.store_record(r, 0),
        Err(RecordError::TtlTooLong { .. })
    ));
    // Held too long by the relaying replica: expired.
    let r = Record::sign(&writer(), b"n".to_vec(), 1, 1_000, vec![]);
    assert_eq!(o.store_record(r, 1_000), Err(RecordError::Expired));
}

#[test]
fn a_full_store_refuses_new_records() {
    let mut o = overlay(Mode::Hybrid);
    o.config.dht.max_records = 2;
    for n in 0..2u8 {
        let r = Record::sign(&writer(), vec![n], 1, 60_000, vec![]);
        assert_eq!(o.store_record(r, 0), Ok(()));
    }
    let r = Record::sign(&writer(), vec![9], 1, 60_000, vec![]);
    assert_eq!(o.store_record(r, 0), Err(RecordError::StoreFull));
}

#[test]
fn oversized_commands_fail_with_typed_errors() {
    let mut o = overlay(Mode::Hybrid);
    let to = Identity::from_secret_bytes([3; 32]).peer_id();
    let out = o.handle(
        1,
        Input::Dht(Command::SendDirect {
            id: 1,
            to,
            payload: vec![0; MAX_DIRECT_PAYLOAD + 1],
        }),
    );
    assert!(matches!(
        dht_events(&out)[..],
        [DhtEvent::Failed {
            id: 1,
            error: DhtError::TooLarge { .. }
        }]
    ));
    let out = o.handle(
        1,
        Input::Dht(Command::Put {
            id: 2,
            name: b"n".to_vec(),
            value: vec![0; MAX_RECORD_VALUE + 1],
            seq: None,
            ttl_ms: 1_000,
        }),
    );
    assert!(matches!(
        dht_events(&out)[..],
        [DhtEvent::Failed {
            id: 2,
            error: DhtError::TooLarge { .. }
        }]
    ));
    let me = o.peer_id();
    let out = o.handle(
        1,
        Input::Dht(Command::SendDirect {
            id: 3,
            to: me,
            payload: vec![],
        }),
    );
    assert!(matches!(
        dht_events(&out)[..],
        [DhtEvent::Failed {
            id: 3,
            error: DhtError::SelfTarget
        }]
    ));
}

#[test]
fn an_id_is_free_again_once_its_command_finished() {
    let mut o = overlay(Mode::Hybrid);
    let key = Key([9; 32]);
    for _ in 0..2 {
        let out = o.handle(1, Input::Dht(Command::Lookup { id: 4, key }));
        assert!(matches!(
            dht_events(&out)[..],
            [DhtEvent::LookupDone { id: 4, .. }]
        ));
    }
}

#[test]
fn a_lone_peer_answers_a_lookup_with_itself() {
    let mut o = overlay(Mode::Hybrid);
    let key = Key([9; 32]);
    let out = o.handle(1, Input::Dht(Command::Lookup { id: 4, key }));
    let me = o.peer_id();
    assert!(matches!(
        &dht_events(&out)[..],
        [DhtEvent::LookupDone { id: 4, closest, hops: 0, .. }] if closest == &vec![me]
    ));
}

#[test]
fn unstructured_mode_refuses_dht_commands() {
    let mut o = overlay(Mode::Unstructured);
    let out = o.handle(
        1,
        Input::Dht(Command::Lookup {
            id: 1,
            key: Key([0; 32]),
        }),
    );
    assert!(matches!(
        dht_events(&out)[..],
        [DhtEvent::Failed {
            id: 1,
            error: DhtError::Disabled(Mode::Unstructured)
        }]
    ));
}

#[test]
fn structured_mode_refuses_the_apps_broadcasts() {
    let mut o = overlay(Mode::Structured);
    let out = o.handle(1, Input::Broadcast { payload: vec![1] });
    assert!(matches!(
        dht_events(&out)[..],
        [DhtEvent::Refused {
            error: DhtError::Disabled(Mode::Structured)
        }]
    ));
}

#[test]
fn xor_distance_orders_keys_by_shared_prefix() {
    let a = Key([0; 32]);
    let mut b = [0u8; 32];
    b[0] = 0b0001_0000;
    let b = Key(b);
    assert_eq!(a.common_prefix_len(&b), 3);
    assert_eq!(a.common_prefix_len(&a), 256);
    let mut c = [0u8; 32];
    c[1] = 1;
    assert!(a.distance(&Key(c)) < a.distance(&b));
}

#[test]
fn dht_frames_round_trip_and_over_long_paths_are_refused() {
    let p = writer().peer_id();
    let record = Record::sign(&writer(), b"n".to_vec(), 1, 60_000, b"v".to_vec());
    let frame = DhtFrame {
        target: Key::of_peer(&p),
        exact: true,
        path: vec![p; 3],
        detours: 0,
        body: DhtBody::Store {
            rpc: 1,
            record,
            age_ms: 0,
        },
    };
    let msg = Message::Dht(Box::new(frame.clone()));
    assert_eq!(wire::decode(&wire::encode(&msg).unwrap()).unwrap(), msg);
    let long = Message::Dht(Box::new(DhtFrame {
        path: vec![p; MAX_DHT_PATH + 1],
        ..frame
    }));
    assert!(matches!(
        wire::encode(&long),
        Err(WireError::LimitExceeded { .. })
    ));
}
