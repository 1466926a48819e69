//! Every message and every error code of the signaling protocol, exercised by real
//! WebSocket clients against a server on 127.0.0.1.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{fast_config, Client, Event, Server};
use futures_util::SinkExt;
use rhizome::id::{Identity, PeerId};
use rhizome::signal::*;
use rhizome_signaling::Config;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn hello_carries_a_fresh_nonce_and_the_protocol_version() {
    let server = Server::start(fast_config()).await;
    let a = server.connect().await; // checks the version
    let b = server.connect().await;
    assert_eq!(a.nonce.len(), 32);
    assert_ne!(a.nonce, b.nonce, "each session gets its own nonce");
    server.stop().await;
}

#[tokio::test]
async fn a_joiner_is_welcomed_with_the_other_members_of_its_room_only() {
    let server = Server::start(fast_config()).await;
    let (a, first) = server.join("lobby").await;
    assert!(first.is_empty(), "the first member is welcomed alone");
    let (_other, _) = server.join("elsewhere").await;
    let (b, second) = server.join("lobby").await;
    assert_eq!(second, vec![a.peer()]);
    let (_c, third) = server.join("lobby").await;
    let third: HashSet<_> = third.into_iter().collect();
    assert_eq!(third, HashSet::from([a.peer(), b.peer()]));
    server.stop().await;
}

#[tokio::test]
async fn welcome_is_a_random_sample_of_at_most_the_configured_size() {
    let server = Server::start(Config {
        sample_size: 3,
        ..fast_config()
    })
    .await;
    let mut members = Vec::new();
    for _ in 0..12 {
        let (c, _) = server.join("big").await;
        members.push(c);
    }
    // Every id a sample may name: the members, and earlier probes that may not have
    // left yet.
    let mut known: HashSet<_> = members.iter().map(|c| c.peer()).collect();
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let (c, sample) = server.join("big").await;
        assert_eq!(sample.len(), 3, "never the full list");
        assert!(!sample.contains(&c.peer()), "never the joiner itself");
        assert!(sample.iter().all(|p| known.contains(p)), "only members");
        known.insert(c.peer());
        seen.extend(sample);
        drop(c);
    }
    assert!(seen.len() > 3, "samples vary between joins: {seen:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_signal_is_relayed_to_its_target_with_the_authenticated_sender() {
    let server = Server::start(fast_config()).await;
    let (mut a, _) = server.join("r").await;
    let (mut b, _) = server.join("r").await;
    // A real signed envelope, carried opaquely.
    let env = SignedEnvelope::seal(
        &a.identity,
        b.peer(),
        1,
        &SignalPayload::Offer {
            sdp: "v=0 fingerprint:sha-256 AA".into(),
        },
    );
    a.signal(b.peer(), env.to_json()).await;
    match b.recv().await {
        ServerMsg::Signal { from, envelope } => {
            assert_eq!(from, a.peer());
            let got = SignedEnvelope::from_json(&envelope).unwrap();
            assert_eq!(got, env);
            assert!(got.open(&b.peer()).is_ok());
        }
        other => panic!("expected a signal, got {other:?}"),
    }
    // Any JSON value is opaque to the server, and relays work both ways.
    b.signal(a.peer(), json!({"anything": [1, 2, 3]})).await;
    match a.recv().await {
        ServerMsg::Signal { from, envelope } => {
            assert_eq!(from, b.peer());
            assert_eq!(envelope, json!({"anything": [1, 2, 3]}));
        }
        other => panic!("expected a signal, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn ping_is_answered_with_pong_before_and_after_join() {
    let server = Server::start(fast_config()).await;
    let mut c = server.connect().await;
    c.ping().await;
    c.join("r").await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_session_with_the_same_key_replaces_the_stale_one() {
    let server = Server::start(fast_config()).await;
    let (mut a, _) = server.join("r").await;
    let (mut old, _) = server.join("r").await;
    let mut new = server.connect().await;
    new.identity = old.identity.clone();
    let welcome = new.join("r").await;
    assert_eq!(
        welcome,
        vec![a.peer()],
        "the replaced session is not offered"
    );
    old.expect_error_and_close(ErrorCode::Replaced, CLOSE_REPLACED)
        .await;
    // Signals to the id now reach the new session.
    a.signal(new.peer(), json!("hi")).await;
    assert!(matches!(new.recv().await, ServerMsg::Signal { .. }));
    // The stale session leaving does not remove its successor.
    drop(old);
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.signal(new.peer(), json!("still there")).await;
    assert!(matches!(new.recv().await, ServerMsg::Signal { .. }));
    let (_d, sample) = server.join("r").await;
    assert_eq!(sample.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_different_key_cannot_take_an_id_and_gets_bad_proof() {
    let server = Server::start(fast_config()).await;
    let (mut victim, _) = server.join("r").await;
    let mut thief = server.connect().await;
    // Claims the victim's id but can only sign with its own key.
    let proof = sign_join_proof(&thief.identity, &thief.nonce, "r");
    thief
        .send(&ClientMsg::Join {
            room: "r".into(),
            peer: victim.peer(),
            proof,
        })
        .await;
    thief.expect_error(ErrorCode::BadProof).await;
    victim.ping().await; // untouched
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_closes_gets_the_servers_close_reply() {
    // Without the reply the client sees an abnormal closure (1006), and Firefox then
    // holds off every new WebSocket to the server for a while, longer after each one.
    use futures_util::StreamExt;
    let server = Server::start(fast_config()).await;
    for joined in [false, true] {
        let mut c = server.connect().await;
        if joined {
            c.join("r").await;
        }
        c.ws.close(None).await.expect("our close frame goes out");
        let reply = tokio::time::timeout(Duration::from_secs(5), c.ws.next())
            .await
            .expect("the server answers in time");
        assert!(
            matches!(reply, Some(Ok(Message::Close(_)))),
            "joined {joined}: expected the close reply, got {reply:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_small_order_key_cannot_join_with_a_forged_proof() {
    let server = Server::start(fast_config()).await;
    let mut c = server.connect().await;
    // The identity point as a peer id: R = identity, s = 0 "signs" every message under
    // plain Ed25519 verification, so this proof would pass without the strict check.
    let mut key = [0u8; 32];
    key[0] = 1;
    let mut sig = [0u8; 64];
    sig[0] = 1;
    c.send(&ClientMsg::Join {
        room: "r".into(),
        peer: PeerId::from_bytes(key),
        proof: rhizome::id::Signature::from_bytes(sig),
    })
    .await;
    c.expect_error(ErrorCode::BadProof).await;
    // Nobody joined: a later honest member is alone in the room.
    let (_, sample) = server.join("r").await;
    assert!(sample.is_empty(), "{sample:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_proof_for_another_nonce_or_room_is_refused_as_bad_proof() {
    let server = Server::start(fast_config()).await;
    let mut c = server.connect().await;
    let other_nonce = sign_join_proof(&c.identity, "not-the-nonce", "r");
    c.send(&ClientMsg::Join {
        room: "r".into(),
        peer: c.peer(),
        proof: other_nonce,
    })
    .await;
    c.expect_error(ErrorCode::BadProof).await;
    let other_room = sign_join_proof(&c.identity, &c.nonce, "elsewhere");
    c.send(&ClientMsg::Join {
        room: "r".into(),
        peer: c.peer(),
        proof: other_room,
    })
    .await;
    c.expect_error(ErrorCode::BadProof).await;
    // The session survives and may still join properly.
    c.join("r").await;
    server.stop().await;
}

#[tokio::test]
async fn an_empty_or_overlong_room_is_refused_as_bad_room() {
    let server = Server::start(fast_config()).await;
    let mut c = server.connect().await;
    let msg = c.join_msg("");
    c.send(&msg).await;
    c.expect_error(ErrorCode::BadRoom).await;
    let long = "x".repeat(MAX_ROOM_LEN + 1);
    let msg = c.join_msg(&long);
    c.send(&msg).await;
    c.expect_error(ErrorCode::BadRoom).await;
    c.join(&"y".repeat(MAX_ROOM_LEN)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_room_refuses_a_newcomer_with_room_full_but_a_returning_member_gets_in() {
    let server = Server::start(Config {
        max_peers_per_room: 2,
        ..fast_config()
    })
    .await;
    let (_a, _) = server.join("r").await;
    let (b, _) = server.join("r").await;
    let mut c = server.connect().await;
    let msg = c.join_msg("r");
    c.send(&msg).await;
    c.expect_error(ErrorCode::RoomFull).await;
    // The session survives and can go elsewhere.
    c.join("other").await;
    // A reload of a member replaces it without needing a free seat.
    let mut b2 = server.connect().await;
    b2.identity = b.identity.clone();
    b2.join("r").await;
    server.stop().await;
}

#[tokio::test]
async fn the_room_limit_refuses_a_new_room_with_too_many_rooms() {
    let server = Server::start(Config {
        max_rooms: 2,
        ..fast_config()
    })
    .await;
    let (_a, _) = server.join("one").await;
    let (b, _) = server.join("two").await;
    let mut c = server.connect().await;
    let msg = c.join_msg("three");
    c.send(&msg).await;
    c.expect_error(ErrorCode::TooManyRooms).await;
    c.join("one").await; // existing rooms still take members
                         // When a room empties its slot frees up.
    drop(b);
    let mut d = server.connect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let msg = d.join_msg("three");
        d.send(&msg).await;
        match d.recv().await {
            ServerMsg::Welcome { .. } => break,
            ServerMsg::Error {
                code: ErrorCode::TooManyRooms,
                ..
            } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_signal_to_a_peer_outside_the_room_is_refused_as_unknown_peer() {
    let server = Server::start(fast_config()).await;
    let (mut a, _) = server.join("r").await;
    let (outsider, _) = server.join("other").await;
    a.signal(outsider.peer(), json!(1)).await;
    let (message, peer) = a.expect_error_about(ErrorCode::UnknownPeer).await;
    assert!(message.contains(&outsider.peer().to_string()));
    assert_eq!(peer, Some(outsider.peer()), "the error names the peer");
    let stranger = Identity::generate().unwrap().peer_id();
    a.signal(stranger, json!(1)).await;
    let (_, peer) = a.expect_error_about(ErrorCode::UnknownPeer).await;
    assert_eq!(peer, Some(stranger));
    a.signal(a.peer(), json!(1)).await;
    let (_, peer) = a.expect_error_about(ErrorCode::UnknownPeer).await;
    assert_eq!(peer, Some(a.peer()));
    // A member that left is unknown too.
    let (b, _) = server.join("r").await;
    let gone = b.peer();
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.signal(gone, json!(1)).await;
    let (_, peer) = a.expect_error_about(ErrorCode::UnknownPeer).await;
    assert_eq!(
        peer,
        Some(gone),
        "a client can fail its attempt with `gone` at once"
    );
    // Not a protocol violation: many of these do not close the session.
    for _ in 0..15 {
        a.signal(gone, json!(1)).await;
        a.expect_error(ErrorCode::UnknownPeer).await;
    }
    a.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_member_that_leaves_is_no_longer_offered() {
    let server = Server::start(fast_config()).await;
    let (a, _) = server.join("r").await;
    let (b, _) = server.join("r").await;
    let b_id = b.peer();
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_c, sample) = server.join("r").await;
    assert_eq!(sample, vec![a.peer()]);
    assert!(!sample.contains(&b_id));
    server.stop().await;
}

#[tokio::test]
async fn signal_before_join_is_refused_as_not_joined() {
    let server = Server::start(fast_config()).await;
    let (target, _) = server.join("r").await;
    let mut c = server.connect().await;
    c.signal(target.peer(), json!(1)).await;
    let (_, peer) = c.expect_error_about(ErrorCode::NotJoined).await;
    assert_eq!(peer, None, "only refusals about a peer name one");
    c.join("r").await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_join_on_one_session_is_refused_as_already_joined() {
    let server = Server::start(fast_config()).await;
    let (mut c, _) = server.join("r").await;
    let msg = c.join_msg("other");
    c.send(&msg).await;
    c.expect_error(ErrorCode::AlreadyJoined).await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_is_refused_as_bad_request_and_the_session_survives() {
    let server = Server::start(fast_config()).await;
    let (mut c, _) = server.join("r").await;
    for bad in [
        "not json",
        "{",
        "[]",
        r#"{"type":"signal"}"#,
        r#"{"type":"signal","to":"zz","envelope":1}"#,
    ] {
        c.send_text(bad).await;
        c.expect_error(ErrorCode::BadRequest).await;
    }
    c.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let message = c.expect_error(ErrorCode::BadRequest).await;
    assert!(message.contains("binary"));
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_message_type_is_refused_as_unknown_type() {
    let server = Server::start(fast_config()).await;
    let mut c = server.connect().await;
    c.send_text(r#"{"type":"teleport","where":"mars"}"#).await;
    let message = c.expect_error(ErrorCode::UnknownType).await;
    assert!(message.contains("teleport"));
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_as_frame_too_large_and_the_session_survives() {
    let server = Server::start(Config {
        max_frame_bytes: 1024,
        ..fast_config()
    })
    .await;
    let (mut a, _) = server.join("r").await;
    let (mut b, _) = server.join("r").await;
    a.signal(b.peer(), json!("x".repeat(2000))).await;
    a.expect_error(ErrorCode::FrameTooLarge).await;
    a.signal(b.peer(), json!("small")).await;
    assert!(matches!(b.recv().await, ServerMsg::Signal { .. }));
    server.stop().await;
}

#[tokio::test]
async fn a_frame_beyond_the_hard_limit_closes_the_session_with_1009() {
    let config = Config {
        max_frame_bytes: 1024,
        ..fast_config()
    };
    let hard = config.hard_frame_bytes();
    let server = Server::start(config).await;
    let (mut a, _) = server.join("r").await;
    let (mut b, _) = server.join("r").await;
    a.send_text(&"x".repeat(hard + 1)).await;
    a.expect_error(ErrorCode::FrameTooLarge).await;
    // The rest of the frame is still unread on the server, so the close frame may be
    // overtaken by a TCP reset; either way the session ends.
    match a.next_event().await {
        Event::Closed(Some((close, reason))) => {
            assert_eq!((close, reason.as_str()), (CLOSE_TOO_BIG, "frame-too-large"))
        }
        Event::Closed(None) | Event::Broken(_) => {}
        other => panic!("expected the session to end, got {other:?}"),
    }
    b.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_burst_beyond_the_bucket_is_rate_limited_and_tokens_refill() {
    let server = Server::start(Config {
        rate_burst: 5,
        rate_per_sec: 10.0,
        max_errors: 100,
        ..fast_config()
    })
    .await;
    let mut c = server.connect().await;
    for _ in 0..8 {
        c.send(&ClientMsg::Ping).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..8 {
        match c.recv().await {
            ServerMsg::Pong => pongs += 1,
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        pongs >= 5 && limited >= 1,
        "{pongs} pongs, {limited} limited"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.ping().await; // refilled
    server.stop().await;
}

#[tokio::test]
async fn a_flood_does_not_slow_other_members_of_the_room() {
    let server = Server::start(Config {
        rate_burst: 20,
        rate_per_sec: 20.0,
        max_errors: 1_000_000,
        ..fast_config()
    })
    .await;
    let (mut a, _) = server.join("r").await;
    let (mut b, _) = server.join("r").await;
    let (mut flooder, _) = server.join("r").await;
    let b_id = b.peer();
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            flooder.signal(b_id, json!("spam")).await;
        }
        flooder
    });
    for i in 0..15 {
        a.signal(b.peer(), json!(i)).await;
        loop {
            match b.recv().await {
                ServerMsg::Signal { from, envelope } if from == a.peer() => {
                    assert_eq!(envelope, json!(i));
                    break;
                }
                ServerMsg::Signal { .. } => continue, // the flooder's first few got through
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let _ = flood.await;
    server.stop().await;
}

#[tokio::test]
async fn a_session_that_never_joins_is_closed_with_join_timeout() {
    let server = Server::start(Config {
        join_deadline: Duration::from_millis(300),
        ..fast_config()
    })
    .await;
    let mut c = server.connect().await;
    c.ping().await; // pings do not stand in for a join
    c.expect_error_and_close(ErrorCode::JoinTimeout, CLOSE_JOIN_TIMEOUT)
        .await;
    let mut joined = server.connect().await;
    joined.join("r").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    joined.ping().await; // a joined session is not bound by the join deadline
    server.stop().await;
}

#[tokio::test]
async fn a_silent_session_is_closed_with_idle_timeout_and_pings_keep_it_alive() {
    let server = Server::start(Config {
        idle_timeout: Duration::from_millis(400),
        ..fast_config()
    })
    .await;
    let (mut quiet, _) = server.join("r").await;
    let (mut chatty, _) = server.join("r").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        chatty.ping().await;
    }
    quiet
        .expect_error_and_close(ErrorCode::IdleTimeout, CLOSE_IDLE_TIMEOUT)
        .await;
    chatty.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn too_many_errors_close_the_session_with_too_many_errors() {
    let server = Server::start(Config {
        max_errors: 3,
        ..fast_config()
    })
    .await;
    let (mut bystander, _) = server.join("r").await;
    let mut c = server.connect().await;
    for _ in 0..3 {
        c.send_text("garbage").await;
        c.expect_error(ErrorCode::BadRequest).await;
    }
    c.send_text("garbage").await;
    let message = c.expect_error(ErrorCode::TooManyErrors).await;
    assert!(message.contains("bad-request"));
    c.expect_close(ErrorCode::TooManyErrors, CLOSE_TOO_MANY_ERRORS)
        .await;
    bystander.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_origin_forbidden() {
    let server = Server::start(Config {
        allowed_origins: vec!["http://good.example".into()],
        ..fast_config()
    })
    .await;
    let url = server.url();
    // The upgrade succeeds so that a browser can read the reason; there is no hello.
    let mut client = Client::connect_raw(&url, Some("http://evil.example")).await;
    client
        .expect_error_and_close(ErrorCode::OriginForbidden, CLOSE_POLICY)
        .await;
    let mut good = Client::connect(&url, Some("http://good.example")).await;
    good.join("r").await;
    let mut native = Client::connect(&url, None).await;
    native.join("r").await;
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_stalls_makes_senders_see_peer_busy_and_nobody_else_waits() {
    let server = Server::start(Config {
        send_queue: 2,
        max_frame_bytes: 256 * 1024,
        rate_burst: 10_000,
        rate_per_sec: 10_000.0,
        write_timeout: Duration::from_secs(10),
        ..fast_config()
    })
    .await;
    let (mut sender, _) = server.join("r").await;
    let (stalled, _) = server.join("r").await; // never reads
    let (mut c, _) = server.join("r").await;
    let (mut d, _) = server.join("r").await;
    let big = json!("x".repeat(200 * 1024));
    let mut busy = false;
    for _ in 0..400 {
        sender.signal(stalled.peer(), big.clone()).await;
        sender.send(&ClientMsg::Ping).await;
        loop {
            match sender.recv().await {
                ServerMsg::Pong => break,
                ServerMsg::Error {
                    code: ErrorCode::PeerBusy,
                    peer,
                    ..
                } => {
                    assert_eq!(peer, Some(stalled.peer()), "peer-busy names the target");
                    busy = true
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if busy {
            break;
        }
    }
    assert!(busy, "the stalled reader's queue filled up");
    // Others relay as usual, and the sender itself is fine.
    c.signal(d.peer(), json!("ok")).await;
    assert!(matches!(d.recv().await, ServerMsg::Signal { .. }));
    sender.signal(c.peer(), json!("ok")).await;
    assert!(matches!(c.recv().await, ServerMsg::Signal { .. }));
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_sends_shutting_down_and_a_close_frame_to_every_session() {
    let server = Server::start(fast_config()).await;
    let (mut a, _) = server.join("r").await;
    let mut b = server.connect().await;
    let stopping = tokio::spawn(server.stop());
    a.expect_error_and_close(ErrorCode::ShuttingDown, CLOSE_GOING_AWAY)
        .await;
    b.expect_error_and_close(ErrorCode::ShuttingDown, CLOSE_GOING_AWAY)
        .await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_full_server_refuses_the_upgrade_so_clients_fall_back() {
    let server = Server::start(Config {
        max_sessions: 1,
        ..fast_config()
    })
    .await;
    let mut a = server.connect().await;
    let refused = tokio_tungstenite::connect_async(server.url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    a.ping().await;
    drop(a);
    // The slot frees up when the session ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.url()).await {
            drop(ws);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn every_error_code_has_a_test_or_is_documented_as_close_only() {
    // Guards this file against a new code being added without a test: the list below
    // must name every code (see the test names above).
    let tested = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::FrameTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::BadProof,
        ErrorCode::BadRoom,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::UnknownPeer,
        ErrorCode::JoinTimeout,
        ErrorCode::IdleTimeout,
        ErrorCode::Replaced,
        ErrorCode::OriginForbidden,
        ErrorCode::ShuttingDown,
        ErrorCode::TooManyErrors,
        ErrorCode::PeerBusy,
    ];
    assert_eq!(
        tested.iter().collect::<HashSet<_>>(),
        ErrorCode::ALL.iter().collect::<HashSet<_>>()
    );
    let _ = Event::Closed(None);
}

#[tokio::test]
async fn independent_servers_share_no_state_so_each_introduces_only_its_own_members() {
    let first = Server::start(fast_config()).await;
    let second = Server::start(fast_config()).await;
    let (a, _) = first.join("r").await;
    let (mut b, welcome) = second.join("r").await;
    assert!(welcome.is_empty(), "the second server knows nobody in r");
    b.signal(a.peer(), json!("across")).await;
    b.expect_error(ErrorCode::UnknownPeer).await;
    // The same key may be a member on both servers at once; neither replaces the other.
    let mut a_on_second = second.connect().await;
    a_on_second.identity = a.identity.clone();
    let welcome = a_on_second.join("r").await;
    assert_eq!(welcome, vec![b.peer()]);
    b.signal(a.peer(), json!("now reachable")).await;
    assert!(matches!(a_on_second.recv().await, ServerMsg::Signal { .. }));
    first.stop().await;
    second.stop().await;
}
