//! Unit tests of the DHT half of one overlay core: records, limits, modes, the wire form.
//! Routing and lookups across many peers are tested in `sim/tests/dht.rs`.

use super::dht::*;
use super::*;

fn writer() -> Identity {
    Identity::from_secret_bytes([7; 32])
}

fn overlay(mode: Mode) -> Overlay {
    overlay_with(Config {
        mode,
        ..Config::default()
    })
}

/// A peer that has joined through one contact (not yet connected).
fn overlay_with(config: Config) -> Overlay {
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
        route: Vec::new(),
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

#[test]
fn leaving_fails_commands_in_flight_and_forgets_the_dht_state() {
    let mut o = overlay(Mode::Hybrid);
    let contact = Identity::from_secret_bytes([2; 32]).peer_id();
    // The contact's connection opens and it becomes our neighbour (the JOIN handshake is
    // not needed for the DHT: any open connection routes).
    o.handle(1, Input::ConnectionUp { peer: contact });
    // A heartbeat puts the neighbour in the routing table.
    o.handle(10_000, Input::Timer);
    assert!(o.dht_known_peers().contains(&contact));
    let far = Identity::from_secret_bytes([3; 32]).peer_id();
    let r = Record::sign(&writer(), b"n".to_vec(), 1, 60_000, b"v".to_vec());
    assert_eq!(o.store_record(r, 0), Ok(()));
    let mut events = Vec::new();
    for cmd in [
        Command::SendDirect {
            id: 1,
            to: far,
            payload: vec![1],
        },
        Command::Lookup {
            id: 2,
            key: Key([7; 32]),
        },
        Command::Put {
            id: 3,
            name: b"mine".to_vec(),
            value: vec![2],
            seq: None,
            ttl_ms: 60_000,
        },
    ] {
        events.extend(dht_events(&o.handle(10_001, Input::Dht(cmd))));
    }
    assert!(
        events.is_empty(),
        "commands in flight, not finished: {events:?}"
    );
    let out = o.handle(10_002, Input::Leave);
    let mut failed: Vec<(u64, DhtError)> = dht_events(&out)
        .into_iter()
        .filter_map(|e| match e {
            DhtEvent::Failed { id, error } => Some((id, error)),
            _ => None,
        })
        .collect();
    failed.sort_by_key(|f| f.0);
    assert_eq!(
        failed,
        vec![
            (1, DhtError::NotJoined),
            (2, DhtError::NotJoined),
            (3, DhtError::NotJoined)
        ]
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Disconnect { peer } if *peer == contact)));
    assert!(o.dht_known_peers().is_empty());
    assert!(o.dht_links().is_empty());
    assert_eq!(o.stored_records(), 0);
    // Nothing comes back later: no timeouts of the forgotten commands.
    let out = o.handle(70_000, Input::Timer);
    assert!(dht_events(&out).is_empty());
    // After leaving, commands are refused; the ids are free again.
    let out = o.handle(
        70_001,
        Input::Dht(Command::Lookup {
            id: 2,
            key: Key([7; 32]),
        }),
    );
    assert!(matches!(
        dht_events(&out)[..],
        [DhtEvent::Failed {
            id: 2,
            error: DhtError::NotJoined
        }]
    ));
}

mod fuzz {
    //! DHT frames from the network: arbitrary bytes never panic the decoder, and every
    //! valid frame survives the wire unchanged.
    use super::*;
    use crate::id::Signature;
    use crate::signal::SignedEnvelope;
    use proptest::prelude::*;

    fn arb_peer() -> impl Strategy<Value = PeerId> {
        any::<[u8; 32]>().prop_map(PeerId::from_bytes)
    }

    fn arb_sig() -> impl Strategy<Value = Signature> {
        (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
            let mut s = [0u8; 64];
            s[..32].copy_from_slice(&a);
            s[32..].copy_from_slice(&b);
            Signature::from_bytes(s)
        })
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            arb_peer(),
            arb_bytes(MAX_RECORD_NAME + 1),
            any::<u64>(),
            any::<u64>(),
            arb_bytes(200),
            arb_sig(),
        )
            .prop_map(|(writer, name, seq, ttl_ms, value, sig)| Record {
                writer,
                name,
                seq,
                ttl_ms,
                value,
                sig,
            })
            .prop_filter("name within the wire limit", |r| {
                r.name.len() <= MAX_RECORD_NAME
            })
    }

    fn arb_record_error() -> impl Strategy<Value = RecordError> {
        prop_oneof![
            Just(RecordError::BadSignature),
            (any::<u64>(), any::<u64>()).prop_map(|(have, got)| RecordError::Stale { have, got }),
            (".{0,8}", any::<u64>(), any::<u64>())
                .prop_map(|(what, len, max)| RecordError::TooLarge { what, len, max }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(ttl_ms, max_ms)| RecordError::TtlTooLong { ttl_ms, max_ms }),
            Just(RecordError::Expired),
            Just(RecordError::StoreFull),
        ]
    }

    fn arb_body() -> impl Strategy<Value = DhtBody> {
        let key = any::<[u8; 32]>().prop_map(Key);
        prop_oneof![
            Just(DhtBody::LinkHello),
            Just(DhtBody::LinkSpare),
            (any::<u64>(), arb_bytes(300))
                .prop_map(|(rpc, payload)| DhtBody::Direct { rpc, payload }),
            (any::<u64>(), any::<u8>(), arb_bytes(40)).prop_map(|(rpc, hops, seal)| DhtBody::Ack {
                rpc,
                hops,
                seal
            }),
            (any::<u64>(), arb_bytes(300))
                .prop_map(|(rpc, payload)| DhtBody::Request { rpc, payload }),
            (any::<u64>(), arb_bytes(300))
                .prop_map(|(rpc, payload)| DhtBody::Response { rpc, payload }),
            any::<u64>().prop_map(|rpc| DhtBody::Unreachable { rpc }),
            (any::<u64>(), key, any::<bool>()).prop_map(|(rpc, key, value)| DhtBody::Find {
                rpc,
                key,
                value
            }),
            (
                any::<u64>(),
                prop::collection::vec(arb_peer(), 0..=MAX_K),
                prop::option::of(arb_record()),
                any::<u8>(),
                arb_bytes(40),
            )
                .prop_map(|(rpc, peers, record, hops, seal)| DhtBody::Nodes {
                    rpc,
                    peers,
                    record,
                    hops,
                    seal,
                }),
            (any::<u64>(), arb_record(), any::<u64>()).prop_map(|(rpc, record, age_ms)| {
                DhtBody::Store {
                    rpc,
                    record,
                    age_ms,
                }
            }),
            (any::<u64>(), prop::option::of(arb_record_error()))
                .prop_map(|(rpc, refused)| DhtBody::Stored { rpc, refused }),
            (arb_peer(), arb_peer(), any::<u64>(), ".{0,40}", arb_sig()).prop_map(
                |(from, to, attempt, body, sig)| DhtBody::Signal(SignedEnvelope {
                    from,
                    to,
                    attempt,
                    body,
                    sig
                })
            ),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = DhtFrame> {
        (
            any::<[u8; 32]>().prop_map(Key),
            any::<bool>(),
            prop::collection::vec(arb_peer(), 1..=MAX_DHT_PATH),
            prop::collection::vec(arb_peer(), 0..=MAX_DHT_PATH),
            any::<u8>(),
            arb_body(),
        )
            .prop_map(|(target, exact, path, route, detours, body)| DhtFrame {
                target,
                exact,
                path,
                route,
                detours,
                body,
            })
    }

    /// The bytes that start every encoded `Message::Dht` (version and variant tag).
    fn dht_prefix() -> Vec<u8> {
        let frame = DhtFrame {
            target: Key([0; 32]),
            exact: false,
            path: vec![],
            route: vec![],
            detours: 0,
            body: DhtBody::LinkHello,
        };
        let bytes = wire::encode(&Message::Dht(Box::new(frame))).unwrap();
        bytes[..2].to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn every_valid_dht_frame_round_trips(frame in arb_frame()) {
            let msg = Message::Dht(Box::new(frame));
            let bytes = wire::encode(&msg).unwrap();
            prop_assert!(bytes.len() <= wire::MAX_FRAME_LEN);
            prop_assert_eq!(wire::decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_after_the_dht_tag_never_panic(bytes in arb_bytes(600)) {
            let mut v = dht_prefix();
            v.extend_from_slice(&bytes);
            // Whatever decodes has passed the length bounds.
            if let Ok(Message::Dht(frame)) = wire::decode(&v) {
                prop_assert!(frame.validate().is_ok());
            }
            let _ = postcard::from_bytes::<DhtFrame>(&bytes);
        }

        #[test]
        fn corrupted_dht_frames_never_panic(
            frame in arb_frame(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = wire::encode(&Message::Dht(Box::new(frame))).unwrap();
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            let _ = wire::decode(&bytes);
            let at = cut.index(bytes.len());
            let _ = wire::decode(&bytes[..at]);
        }

        #[test]
        fn a_joined_peer_survives_any_dht_frame_from_a_neighbour(frame in arb_frame()) {
            let mut o = overlay(Mode::Hybrid);
            let contact = Identity::from_secret_bytes([2; 32]).peer_id();
            o.handle(1, Input::ConnectionUp { peer: contact });
            let mut frame = frame;
            // Half the time a well-formed path (ending at the sender), else whatever came.
            if frame.exact {
                frame.path.truncate(MAX_DHT_PATH - 1);
                frame.path.push(contact);
            }
            let bytes = wire::encode(&Message::Dht(Box::new(frame))).unwrap();
            o.handle(2, Input::Frame { from: contact, bytes });
            o.handle(30_000, Input::Timer);
        }
    }
}

/// Opens an inbound DHT link from `peer` (its connection comes up, then its `LinkHello`).
fn accept_link(o: &mut Overlay, now: u64, peer: PeerId) {
    o.handle(now, Input::ConnectionUp { peer });
    let hello = DhtFrame {
        target: Key::of_peer(&o.peer_id()),
        exact: true,
        path: vec![peer],
        route: Vec::new(),
        detours: 0,
        body: DhtBody::LinkHello,
    };
    let bytes = wire::encode(&Message::Dht(Box::new(hello))).unwrap();
    o.handle(now, Input::Frame { from: peer, bytes });
}

fn link_spare(o: &mut Overlay, now: u64, from: PeerId) -> Vec<Output> {
    let frame = DhtFrame {
        target: Key::of_peer(&o.peer_id()),
        exact: true,
        path: vec![from],
        route: Vec::new(),
        detours: 0,
        body: DhtBody::LinkSpare,
    };
    let bytes = wire::encode(&Message::Dht(Box::new(frame))).unwrap();
    o.handle(now, Input::Frame { from, bytes })
}

#[test]
fn a_dht_link_is_closed_only_when_both_ends_have_another_in_its_slot() {
    let mut o = overlay(Mode::Hybrid);
    let me = Key::of_peer(&o.peer_id());
    // Peers by shared prefix length with us (= their link level with b = 1).
    let mut by_level: BTreeMap<usize, Vec<PeerId>> = BTreeMap::new();
    for seed in 10..200u8 {
        let p = Identity::from_secret_bytes([seed; 32]).peer_id();
        by_level
            .entry(me.common_prefix_len(&Key::of_peer(&p)))
            .or_default()
            .push(p);
    }
    let pair = by_level.values().find(|v| v.len() >= 2).unwrap().clone();
    let (a, b) = (pair[0], pair[1]);
    let level_a = me.common_prefix_len(&Key::of_peer(&a));
    let lone = by_level
        .iter()
        .find(|(l, _)| **l != level_a)
        .map(|(_, v)| v[0])
        .unwrap();
    for p in [a, b, lone] {
        accept_link(&mut o, 1, p);
    }
    assert_eq!(o.dht_links().len(), 3);
    // The only link in its slot stays, whatever the other end says.
    let out = link_spare(&mut o, 2, lone);
    assert!(!out
        .iter()
        .any(|x| matches!(x, Output::Disconnect { peer } if *peer == lone)));
    // One of two links in the same slot goes, and the other then stays.
    let out = link_spare(&mut o, 3, a);
    assert!(out
        .iter()
        .any(|x| matches!(x, Output::Disconnect { peer } if *peer == a)));
    let out = link_spare(&mut o, 4, b);
    assert!(!out
        .iter()
        .any(|x| matches!(x, Output::Disconnect { peer } if *peer == b)));
    let mut left = o.dht_links();
    left.sort();
    let mut want = vec![b, lone];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_dht_link_carrying_a_message_is_not_closed_under_it() {
    let mut o = overlay(Mode::Hybrid);
    let me = Key::of_peer(&o.peer_id());
    // Two links in one slot: either could go when its other end offers to close it.
    let (a, b) = (peer_in_bucket(&me, 3, 1), peer_in_bucket(&me, 3, 2));
    for p in [a, b] {
        accept_link(&mut o, 1, p);
    }
    let closes = |out: &[Output], peer: PeerId| {
        out.iter()
            .any(|x| matches!(x, Output::Disconnect { peer: p } if *p == peer))
    };
    // A message to `a` goes straight over the link and waits for its acknowledgement.
    let out = o.handle(
        2,
        Input::Send {
            id: 7,
            to: a,
            payload: b"in flight".to_vec(),
        },
    );
    assert!(out
        .iter()
        .any(|x| matches!(x, Output::Send { to, .. } if *to == a)));
    assert!(
        !closes(&link_spare(&mut o, 3, a), a),
        "closing the link would fail the send as unreachable"
    );
    // Acknowledged: now the link may go.
    let ack = wire::encode(&Message::DataAck { ids: vec![7] }).unwrap();
    o.handle(
        4,
        Input::Frame {
            from: a,
            bytes: ack,
        },
    );
    assert!(closes(&link_spare(&mut o, 5, a), a));
    assert!(o.dht_links().contains(&b));
}

/// A peer id sharing exactly `bits` leading bits with `me` (then `salt` in the last byte).
fn peer_in_bucket(me: &Key, bits: usize, salt: u8) -> PeerId {
    let mut b = me.0;
    b[bits / 8] ^= 0x80 >> (bits % 8);
    b[31] ^= salt;
    PeerId::from_bytes(b)
}

#[test]
fn bucket_refresh_skips_buckets_the_self_lookup_covers_and_buckets_used_of_late() {
    let mut o = overlay(Mode::Hybrid);
    let me = Key::of_peer(&o.peer_id());
    let (k, stale) = (o.config.dht.k, o.config.dht.stale_ms);
    // Bucket 1 full; 3 peers in bucket 2; one peer in each of buckets 10..=17: those 8 are
    // our k closest, so the self-lookup finds everyone in buckets 11 and deeper.
    let table = |o: &mut Overlay, now: u64| {
        for s in 0..k as u8 {
            o.dht.learn(peer_in_bucket(&me, 1, s), now, k, stale, true);
        }
        for s in 0..3 {
            o.dht.learn(peer_in_bucket(&me, 2, s), now, k, stale, true);
        }
        for bits in 10..=17 {
            o.dht
                .learn(peer_in_bucket(&me, bits, 0), now, k, stale, true);
        }
    };
    table(&mut o, 1);
    let want: Vec<usize> = std::iter::once(0).chain(2..=10).collect();
    assert_eq!(o.buckets_to_refresh(), want);
    // An application lookup into bucket 4 stands in for its refresh for one period.
    let mut key = peer_in_bucket(&me, 4, 9).as_bytes().to_owned();
    key[20] ^= 0x55;
    o.handle(
        1_000,
        Input::Dht(Command::Lookup {
            id: 1,
            key: Key(key),
        }),
    );
    // (With no links here, its queries failed and their peers were forgotten.)
    table(&mut o, 1_000);
    assert_eq!(o.buckets_to_refresh().len(), want.len() - 1);
    assert!(!o.buckets_to_refresh().contains(&4));
    o.now = 1_000 + o.config.dht.self_lookup_ms;
    assert!(o.buckets_to_refresh().contains(&4));
    // Knowing fewer than k peers, the self-lookup vouches for nothing: every non-full
    // bucket down to the deepest known is refreshed.
    let mut lone = overlay(Mode::Hybrid);
    lone.dht
        .learn(peer_in_bucket(&me, 12, 0), 1, k, stale, true);
    assert_eq!(lone.buckets_to_refresh(), (0..=12).collect::<Vec<_>>());
}

fn sends_link_spare(out: &[Output], to: PeerId) -> bool {
    out.iter().any(|x| match x {
        Output::Send { to: t, frame } if *t == to => matches!(
            wire::decode(frame),
            Ok(Message::Dht(f)) if f.body == DhtBody::LinkSpare
        ),
        _ => false,
    })
}

#[test]
fn at_the_link_budget_a_redundant_link_is_offered_for_closing_not_cut() {
    // Silent peers stay up for the test (nobody here answers pings).
    let mut config = Config {
        ping_interval_ms: 600_000,
        suspicion_timeout_ms: 600_000,
        ..Config::default()
    };
    config.dht.max_links = 1;
    let mut o = Overlay::new(Identity::from_secret_bytes([1; 32]), config, 5);
    let contact = Identity::from_secret_bytes([2; 32]).peer_id();
    o.handle(
        0,
        Input::Join {
            contacts: vec![contact],
        },
    );
    let me = Key::of_peer(&o.peer_id());
    let (k, stale) = (o.config.dht.k, o.config.dht.stale_ms);
    o.handle(1, Input::ConnectionUp { peer: contact });
    // Our one link goes to a deep slot.
    let deep = peer_in_bucket(&me, 12, 0);
    o.dht.learn(deep, 1, k, stale, true);
    let out = o.handle(10_000, Input::Timer);
    assert!(out
        .iter()
        .any(|x| matches!(x, Output::Connect { peer, .. } if *peer == deep)));
    o.handle(10_001, Input::ConnectionUp { peer: deep });
    // Someone else links to us in the same slot, and a peer of an uncovered slot turns up.
    accept_link(&mut o, 10_002, peer_in_bucket(&me, 12, 1));
    let wanted = peer_in_bucket(&me, 8, 0);
    o.dht.learn(wanted, 10_003, k, stale, true);
    // At the budget: our link is offered for closing, not cut (its other end may need it).
    let out = o.handle(20_000, Input::Timer);
    assert!(!out
        .iter()
        .any(|x| matches!(x, Output::Disconnect { peer } if *peer == deep)));
    assert!(sends_link_spare(&out, deep));
    assert_eq!(o.dht_stats().links_swapped, 1);
    // The other end agrees (it has another link in its slot): the link closes, and the
    // freed budget goes to the uncovered slot.
    let out = link_spare(&mut o, 20_001, deep);
    assert!(out
        .iter()
        .any(|x| matches!(x, Output::Disconnect { peer } if *peer == deep)));
    // Within the next link rounds (our refresh queries to `wanted` go unanswered here and
    // drop it from the table, so it is heard of again before each).
    let mut connects = Vec::new();
    for now in [25_000, 30_000, 35_000] {
        o.dht.learn(wanted, now - 1, k, stale, true);
        connects.extend(
            o.handle(now, Input::Timer)
                .into_iter()
                .filter_map(|x| match x {
                    Output::Connect { peer, .. } => Some(peer),
                    _ => None,
                }),
        );
    }
    assert!(connects.contains(&wanted), "{connects:?}");
}

/// The `Find` frames in `out`: (next hop, target, rpc, key looked up).
fn finds(out: &[Output]) -> Vec<(PeerId, Key, u64, Key)> {
    out.iter()
        .filter_map(|x| match x {
            Output::Send { to, frame } => match wire::decode(frame) {
                Ok(Message::Dht(f)) => match f.body {
                    DhtBody::Find { rpc, key, .. } => Some((*to, f.target, rpc, key)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_lookup_asks_the_closest_candidate_again_by_another_route_when_its_query_times_out() {
    let config = Config {
        ping_interval_ms: 600_000,
        suspicion_timeout_ms: 600_000,
        ..Config::default()
    };
    let mut o = overlay_with(config);
    let contact = Identity::from_secret_bytes([2; 32]).peer_id();
    o.handle(1, Input::ConnectionUp { peer: contact });
    let me = Key::of_peer(&o.peer_id());
    let (k, stale) = (o.config.dht.k, o.config.dht.stale_ms);
    // Two DHT links, and a far peer that is the closest we know to the key.
    for salt in [1, 2] {
        accept_link(&mut o, 2, peer_in_bucket(&me, 0, salt));
    }
    let responsible = peer_in_bucket(&me, 0, 0x40);
    let mut key = *responsible.as_bytes();
    key[31] ^= 1;
    let key = Key(key);
    o.dht.learn(responsible, 3, k, stale, true);
    o.handle(10, Input::Dht(Command::Lookup { id: 1, key }));
    // Nobody answers: the key-routed query times out, then the query to `responsible`.
    let query = |out: &[Output]| {
        finds(out)
            .into_iter()
            .find(|q| q.1 == Key::of_peer(&responsible) && q.3 == key)
    };
    let mut first = None;
    let mut again = None;
    for now in (1_000..8_000).step_by(1_000) {
        o.dht.learn(responsible, now - 1, k, stale, true);
        let out = o.handle(now, Input::Timer);
        match (first, query(&out)) {
            (None, Some(q)) => first = Some(q),
            (Some(_), Some(q)) if again.is_none() => again = Some(q),
            _ => {}
        }
    }
    let (hop1, _, rpc1, _) = first.expect("queried the closest candidate");
    let (hop2, _, rpc2, _) = again.expect("asked again after its query timed out");
    assert_eq!(rpc1, rpc2, "the same query, retried");
    assert_ne!(hop1, hop2, "through another first hop");
}

/// The DHT frames in `out`: (next hop, frame).
fn dht_sends(out: &[Output]) -> Vec<(PeerId, DhtFrame)> {
    out.iter()
        .filter_map(|x| match x {
            Output::Send { to, frame } => match wire::decode(frame) {
                Ok(Message::Dht(f)) => Some((*to, *f)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// An overlay linked to `via` and `near`, both toward a newcomer (returned with its key):
/// `near` much closer to it, so greedy routing would take `near`, though `near` may not
/// know the newcomer yet (its deepest links come last).
fn linked_toward_a_newcomer() -> (Overlay, PeerId, Key, PeerId, PeerId) {
    let mut o = overlay(Mode::Hybrid);
    let newcomer = Identity::from_secret_bytes([40; 32]).peer_id();
    let nk = Key::of_peer(&newcomer);
    let (via, near) = (peer_in_bucket(&nk, 0, 1), peer_in_bucket(&nk, 30, 1));
    for p in [via, near] {
        accept_link(&mut o, 1, p);
    }
    (o, newcomer, nk, via, near)
}

#[test]
fn a_newcomers_lookup_answer_goes_back_the_way_its_query_came() {
    // The newcomer's query reached us through `via`.
    let (mut o, newcomer, nk, via, _near) = linked_toward_a_newcomer();
    let me = o.peer_id();
    let find = DhtFrame {
        target: Key::of_peer(&me),
        exact: false,
        path: vec![newcomer, via],
        route: Vec::new(),
        detours: 0,
        body: DhtBody::Find {
            rpc: 5,
            key: Key::of_peer(&me),
            value: false,
        },
    };
    let bytes = wire::encode(&Message::Dht(Box::new(find))).unwrap();
    let out = o.handle(2, Input::Frame { from: via, bytes });
    let answers: Vec<(PeerId, DhtFrame)> = dht_sends(&out)
        .into_iter()
        .filter(|(_, f)| matches!(f.body, DhtBody::Nodes { rpc: 5, .. }))
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (hop, frame) = &answers[0];
    assert_eq!(*hop, via, "the answer retraces the query's path");
    assert_eq!(frame.route, vec![newcomer]);
    assert_eq!(frame.target, nk);
}

#[test]
fn a_relay_passes_an_answer_along_its_way_back_and_greedily_once_that_broke() {
    let mut o = overlay(Mode::Hybrid);
    let asker = Identity::from_secret_bytes([40; 32]).peer_id();
    let ak = Key::of_peer(&asker);
    let (from, back, near) = (
        peer_in_bucket(&ak, 0, 1),
        peer_in_bucket(&ak, 1, 1),
        peer_in_bucket(&ak, 30, 1),
    );
    for p in [from, back, near] {
        accept_link(&mut o, 1, p);
    }
    let answer = |route: Vec<PeerId>| {
        let frame = DhtFrame {
            target: ak,
            exact: true,
            path: vec![peer_in_bucket(&ak, 2, 9), from],
            route,
            detours: 0,
            body: DhtBody::Ack {
                rpc: 3,
                hops: 4,
                seal: vec![0; seal::OVERHEAD],
            },
        };
        wire::encode(&Message::Dht(Box::new(frame))).unwrap()
    };
    // Along the way back, though `near` is closer to the asker.
    let gone = peer_in_bucket(&ak, 3, 1);
    let out = o.handle(
        2,
        Input::Frame {
            from,
            bytes: answer(vec![asker, gone, back]),
        },
    );
    let sent = dht_sends(&out);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, back);
    assert_eq!(sent[0].1.route, vec![asker, gone]);
    // A hop further on that we are linked to cuts the way short.
    let out = o.handle(
        3,
        Input::Frame {
            from,
            bytes: answer(vec![asker, back, gone]),
        },
    );
    assert_eq!(dht_sends(&out)[0].0, back);
    // No hop of the way back is linked here: greedy routing takes over.
    let out = o.handle(
        4,
        Input::Frame {
            from,
            bytes: answer(vec![asker, gone]),
        },
    );
    assert_eq!(dht_sends(&out)[0].0, near);
}

/// The seal of a lookup answer from `from` (one of `ids`, or the link [2; 32]).
fn sealed_nodes(
    ids: &[Identity],
    from: PeerId,
    to: &PeerId,
    rpc: u64,
    peers: &[PeerId],
    hops: u8,
) -> Vec<u8> {
    let link = Identity::from_secret_bytes([2; 32]);
    let id = ids.iter().find(|i| i.peer_id() == from).unwrap_or(&link);
    let extra: Vec<u8> = peers.iter().flat_map(|p| *p.as_bytes()).collect();
    seal::Sealer::new(&from, rpc)
        .seal(id, to, seal::Kind::Nodes, rpc, hops, &extra, &[])
        .unwrap()
}

#[test]
fn a_get_finds_a_record_held_only_beyond_the_closest_replicas() {
    let mut o = overlay(Mode::Hybrid);
    let link = Identity::from_secret_bytes([2; 32]).peer_id();
    o.handle(1, Input::ConnectionUp { peer: link });
    let (k, stale) = (o.config.dht.k, o.config.dht.stale_ms);
    o.dht.learn(link, 1, k, stale, true);
    let me = o.peer_id();
    let record = Record::sign(&writer(), b"n".to_vec(), 1, 60_000, b"v".to_vec());
    let key = record.key();
    // Twenty peers near the key, nearest first; only the 18th holds the record (a put
    // under churn missed some of the true closest, so a replica sits further out). Real
    // identities: each answer is sealed by its peer.
    let mut ids: Vec<Identity> = (0..400u32)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            Identity::from_secret_bytes(seed)
        })
        .collect();
    ids.sort_by_key(|id| Key::of_peer(&id.peer_id()).distance(&key));
    ids.truncate(20);
    let near: Vec<PeerId> = ids.iter().map(Identity::peer_id).collect();
    let holder = near[17];
    let mut queried = Vec::new();
    let mut frames = o.handle(
        2,
        Input::Dht(Command::Get {
            id: 9,
            writer: writer().peer_id(),
            name: b"n".to_vec(),
        }),
    );
    let mut got = Vec::new();
    for now in 3..60 {
        got.extend(dht_events(&frames));
        let mut next = Vec::new();
        for (to, f) in dht_sends(&frames) {
            let DhtBody::Find { rpc, .. } = f.body else {
                continue;
            };
            assert_eq!(to, link);
            // Every peer answers with the twenty (we asked the link first ourselves).
            let from = PeerId::from_bytes(f.target.0);
            queried.push(from);
            let answer = DhtFrame {
                target: Key::of_peer(&me),
                exact: true,
                path: vec![from, link],
                route: Vec::new(),
                detours: 0,
                body: DhtBody::Nodes {
                    rpc,
                    peers: near.clone(),
                    record: (from == holder).then(|| record.clone()),
                    hops: 1,
                    seal: sealed_nodes(&ids, from, &me, rpc, &near, 1),
                },
            };
            let bytes = wire::encode(&Message::Dht(Box::new(answer))).unwrap();
            next.extend(o.handle(now, Input::Frame { from: link, bytes }));
        }
        if next.is_empty() {
            break;
        }
        frames = next;
    }
    assert!(queried.contains(&holder), "{queried:?}");
    assert!(
        matches!(&got[..], [DhtEvent::GetDone { id: 9, record: r }] if *r == record),
        "{got:?}"
    );
}

#[test]
fn a_response_goes_back_the_way_its_request_came() {
    // The newcomer's request reached us through `via`.
    let (mut o, newcomer, nk, via, near) = linked_toward_a_newcomer();
    let me = o.peer_id();
    let newcomer_id = Identity::from_secret_bytes([40; 32]);
    let mut sealer = seal::Sealer::new(&newcomer, 1);
    let mut sealed = || {
        sealer
            .seal(&newcomer_id, &me, seal::Kind::Request, 7, 0, &[], b"ping")
            .unwrap()
    };
    let request = DhtFrame {
        target: Key::of_peer(&me),
        exact: true,
        path: vec![newcomer, via],
        route: Vec::new(),
        detours: 0,
        body: DhtBody::Request {
            rpc: 7,
            payload: sealed(),
        },
    };
    let bytes = wire::encode(&Message::Dht(Box::new(request.clone()))).unwrap();
    let out = o.handle(2, Input::Frame { from: via, bytes });
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::Dht(DhtEvent::Request { from, id: 7, .. })) if *from == newcomer
    )));
    // Its retry by another way (the first way back broke) is not reported again, but
    // that way is the one the response takes.
    let other = peer_in_bucket(&nk, 2, 1);
    accept_link(&mut o, 2, other);
    let retry = DhtFrame {
        path: vec![newcomer, other],
        body: DhtBody::Request {
            rpc: 7,
            payload: sealed(),
        },
        ..request
    };
    let bytes = wire::encode(&Message::Dht(Box::new(retry))).unwrap();
    let out = o.handle(2, Input::Frame { from: other, bytes });
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Dht(DhtEvent::Request { .. })))));
    let respond = Command::Respond {
        to: newcomer,
        id: 7,
        payload: b"pong".to_vec(),
    };
    let out = o.handle(3, Input::Dht(respond));
    let responses: Vec<(PeerId, DhtFrame)> = dht_sends(&out)
        .into_iter()
        .filter(|(_, f)| matches!(f.body, DhtBody::Response { rpc: 7, .. }))
        .collect();
    assert_eq!(responses.len(), 1, "{responses:?}");
    let (hop, frame) = &responses[0];
    assert_eq!(
        *hop, other,
        "the response retraces the request's latest path"
    );
    assert_eq!(frame.route, vec![newcomer]);
    // Answered once: a second response to the same request goes greedily.
    let again = Command::Respond {
        to: newcomer,
        id: 7,
        payload: b"pong".to_vec(),
    };
    let out = o.handle(4, Input::Dht(again));
    let hops: Vec<PeerId> = dht_sends(&out).into_iter().map(|(p, _)| p).collect();
    assert_eq!(hops, vec![near]);
}

/// Hostile relay (issue 20, routing-table poisoning): a linked peer relays frames whose
/// paths name made-up ids, and forges a lookup answer "from" a made-up id. None of them
/// enters the routing table; the relay does, as does a real source whose sealed message
/// opened. Before, every id of a relayed path entered the table as heard from, and a
/// relay could answer for anyone.
#[test]
fn made_up_ids_in_paths_and_lookup_answers_do_not_enter_the_routing_table() {
    let mut o = overlay(Mode::Hybrid);
    let me = o.peer_id();
    let link_id = Identity::from_secret_bytes([2; 32]);
    let link = link_id.peer_id();
    accept_link(&mut o, 1, link);
    let fakes: Vec<PeerId> = (0..8u8)
        .map(|i| peer_in_bucket(&Key::of_peer(&me), 1 + i as usize, i))
        .collect();
    // A Find "from" made-up ids, relayed by the link, ends here (nobody closer).
    let find = DhtFrame {
        target: Key::of_peer(&me),
        exact: false,
        path: vec![fakes[0], fakes[1], link],
        route: Vec::new(),
        detours: 0,
        body: DhtBody::Find {
            rpc: 1,
            key: Key::of_peer(&me),
            value: false,
        },
    };
    let bytes = wire::encode(&Message::Dht(Box::new(find))).unwrap();
    o.handle(2, Input::Frame { from: link, bytes });
    // A lookup of ours, answered by the link with made-up ids (sealed: the link said it)
    // and "by" a made-up id (not sealed by it: a relay's forgery).
    let out = o.handle(
        3,
        Input::Dht(Command::Lookup {
            id: 5,
            key: Key::of_peer(&fakes[7]),
        }),
    );
    let rpc = dht_sends(&out)
        .iter()
        .find_map(|(_, f)| match f.body {
            DhtBody::Find { rpc, .. } => Some(rpc),
            _ => None,
        })
        .expect("a query goes out");
    let answer = |from: PeerId, peers: Vec<PeerId>, seal: Vec<u8>| {
        let f = DhtFrame {
            target: Key::of_peer(&me),
            exact: true,
            path: if from == link {
                vec![link]
            } else {
                vec![from, link]
            },
            route: Vec::new(),
            detours: 0,
            body: DhtBody::Nodes {
                rpc,
                peers,
                record: None,
                hops: 1,
                seal,
            },
        };
        wire::encode(&Message::Dht(Box::new(f))).unwrap()
    };
    let forged = answer(fakes[2], fakes[3..5].to_vec(), vec![0; seal::OVERHEAD]);
    o.handle(
        4,
        Input::Frame {
            from: link,
            bytes: forged,
        },
    );
    let seal = sealed_nodes(&[], link, &me, rpc, &fakes[5..8], 1);
    o.handle(
        4,
        Input::Frame {
            from: link,
            bytes: answer(link, fakes[5..8].to_vec(), seal),
        },
    );
    let known: Vec<PeerId> = o.dht.known().collect();
    assert!(known.contains(&link), "{known:?}");
    // The path's ids and the forged answer's are nowhere; the link's own answer is its
    // word: hearsay, which never displaces a peer heard from (the next test).
    for f in &fakes[..5] {
        assert!(!known.contains(f), "made-up {f:?} in the table: {known:?}");
    }
    assert_eq!(o.dht_stats().forged, 1, "the forged answer did not open");
    // A real peer whose sealed message opened is learned (it signed something fresh).
    let far = Identity::from_secret_bytes([66; 32]);
    let mut sealer = seal::Sealer::new(&far.peer_id(), 9);
    let payload = sealer
        .seal(&far, &me, seal::Kind::Direct, 3, 0, &[], b"hi")
        .unwrap();
    let direct = DhtFrame {
        target: Key::of_peer(&me),
        exact: true,
        path: vec![far.peer_id(), link],
        route: Vec::new(),
        detours: 0,
        body: DhtBody::Direct { rpc: 3, payload },
    };
    let bytes = wire::encode(&Message::Dht(Box::new(direct))).unwrap();
    let out = o.handle(5, Input::Frame { from: link, bytes });
    assert!(dht_events(&out)
        .iter()
        .any(|e| matches!(e, DhtEvent::Direct { from, .. } if *from == far.peer_id())));
    assert!(o.dht.known().any(|p| p == far.peer_id()));
}

/// Routing-table poisoning by hearsay (issue 20): a bucket of peers heard from is never
/// displaced by hearsay (ids only named by others: passive views, lookup answers),
/// however old; a peer heard from still replaces stale hearsay. Before, a full bucket's
/// oldest contact went once stale, whoever replaced it.
#[test]
fn hearsay_never_displaces_a_peer_heard_from() {
    let mut o = overlay(Mode::Hybrid);
    let me = Key::of_peer(&o.peer_id());
    let (k, stale) = (o.config.dht.k, o.config.dht.stale_ms);
    let in_bucket_3 = |i: u8| peer_in_bucket(&me, 3, i + 1);
    for i in 0..k as u8 {
        o.dht.learn(in_bucket_3(i), 10, k, stale, false);
    }
    let real = in_bucket_3(100);
    o.dht.learn(real, 10 + stale, k, stale, true);
    assert!(
        o.dht.known().any(|p| p == real),
        "a peer heard from gets in"
    );
    let mut o = overlay(Mode::Hybrid);
    for i in 0..k as u8 {
        o.dht.learn(in_bucket_3(i), 10, k, stale, true);
    }
    let fake = in_bucket_3(101);
    o.dht.learn(fake, 10 + stale * 10, k, stale, false);
    assert!(!o.dht.known().any(|p| p == fake), "hearsay stays out");
}

#[test]
fn in_a_room_with_a_secret_a_dht_link_needs_the_proof_first() {
    let key = super::room::RoomKey::derive("room", "s");
    let hello = |o: &Overlay, peer: PeerId| {
        wire::encode(&Message::Dht(Box::new(DhtFrame {
            target: Key::of_peer(&o.peer_id()),
            exact: true,
            path: vec![peer],
            route: Vec::new(),
            detours: 0,
            body: DhtBody::LinkHello,
        })))
        .unwrap()
    };
    let proof = |mac: Vec<u8>| wire::encode(&Message::RoomProof { mac }).unwrap();
    let refused = |out: &[Output], peer: PeerId| {
        out.iter().any(
            |o| matches!(o, Output::Event(super::Event::BadRoomSecret { peer: p }) if *p == peer),
        )
    };
    let mut o = overlay_with(Config {
        room_key: Some(key.clone()),
        ..Config::default()
    });
    let me = o.peer_id();
    // A member: its proof, then its hello, makes a link.
    let member = Identity::from_secret_bytes([7; 32]).peer_id();
    o.handle(1, Input::ConnectionUp { peer: member });
    let out = o.handle(
        2,
        Input::Frame {
            from: member,
            bytes: proof(key.proof(&member, &me).to_vec()),
        },
    );
    assert!(!refused(&out, member));
    let bytes = hello(&o, member);
    let out = o.handle(
        3,
        Input::Frame {
            from: member,
            bytes,
        },
    );
    assert!(!refused(&out, member));
    assert!(o.dht_links().contains(&member));
    // A hello without a proof, or after another room's proof: refused, no link.
    let other = super::room::RoomKey::derive("room", "t");
    for (seed, first) in [(8u8, None), (9, Some(other))] {
        let peer = Identity::from_secret_bytes([seed; 32]).peer_id();
        o.handle(4, Input::ConnectionUp { peer });
        let mut out = Vec::new();
        if let Some(k) = first {
            out.extend(o.handle(
                5,
                Input::Frame {
                    from: peer,
                    bytes: proof(k.proof(&peer, &me).to_vec()),
                },
            ));
        }
        let bytes = hello(&o, peer);
        out.extend(o.handle(6, Input::Frame { from: peer, bytes }));
        assert!(refused(&out, peer), "peer {seed}");
        assert!(!o.dht_links().contains(&peer));
    }
}
