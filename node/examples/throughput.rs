//! One-way throughput of the native transport next to webrtc-rs's own bare data channel,
//! in the same run, on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p rhizome-node --example throughput -- [MiB] [rounds]
//! ```
//!
//! Both sides of each pair live in this process. "rhizome" sends 1 MiB messages through
//! [`NativeConnection`] (16 KiB chunks, our queue, `OnBufferedAmountLow` backpressure,
//! reassembly); "bare" sends 16 KiB messages straight into a webrtc-rs data channel with
//! the same 1 MiB / 256 KiB water marks, the way webrtc-rs's flow-control example does.
//! Rounds alternate and the median is reported, because the machine is shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use rhizome::id::Identity;
use rhizome::transport::native::{NativeConfig, NativeConnection, HIGH_WATER, LOW_WATER};
use rhizome::transport::{ConnEvent, ConnLimits, TransportError};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, SettingEngineBuilder,
};

const MIB: usize = 1024 * 1024;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let r = rhizome_round(total_mib).await;
        let b = bare_round(total_mib).await;
        println!("round {round}: rhizome {r:.1} MiB/s, bare webrtc-rs {b:.1} MiB/s");
        ours.push(r);
        bare.push(b);
    }
    println!(
        "median of {rounds} rounds, {total_mib} MiB each: rhizome {:.1} MiB/s, bare webrtc-rs {:.1} MiB/s",
        median(&mut ours),
        median(&mut bare)
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// MiB/s through a pair of [`NativeConnection`]s.
async fn rhizome_round(total_mib: usize) -> f64 {
    let (a, b) = (
        Identity::from_secret_bytes([1; 32]),
        Identity::from_secret_bytes([2; 32]),
    );
    let config = NativeConfig::loopback();
    let limits = ConnLimits::default();
    let (ca, mut ra) =
        NativeConnection::with_config(a.peer_id(), b.peer_id(), &[], limits.clone(), true, &config)
            .await
            .expect("connection a");
    let (cb, mut rb) =
        NativeConnection::with_config(b.peer_id(), a.peer_id(), &[], limits, false, &config)
            .await
            .expect("connection b");
    let (ca, cb) = (Arc::new(ca), Arc::new(cb));
    // Signals cross directly; other events come out on a channel per side.
    let (a_tx, mut a_events) = mpsc::unbounded_channel();
    let (b_tx, mut b_events) = mpsc::unbounded_channel();
    let cb2 = cb.clone();
    tokio::spawn(async move {
        while let Some(ev) = ra.next().await {
            match ev {
                ConnEvent::Signal(s) => {
                    let _ = cb2.handle_signal(s).await;
                }
                other => {
                    let _ = a_tx.send(other);
                }
            }
        }
    });
    let ca2 = ca.clone();
    tokio::spawn(async move {
        while let Some(ev) = rb.next().await {
            match ev {
                ConnEvent::Signal(s) => {
                    let _ = ca2.handle_signal(s).await;
                }
                other => {
                    let _ = b_tx.send(other);
                }
            }
        }
    });
    assert!(matches!(a_events.recv().await, Some(ConnEvent::Open)));
    assert!(matches!(b_events.recv().await, Some(ConnEvent::Open)));

    let message = vec![0x5au8; MIB];
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        while got < total_mib * MIB {
            match b_events.recv().await {
                Some(ConnEvent::Message(m)) => got += m.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    for _ in 0..total_mib {
        loop {
            match ca.send(&message) {
                Ok(()) => break,
                Err(TransportError::Backpressure) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    receiver.await.expect("all bytes arrive");
    let rate = total_mib as f64 / start.elapsed().as_secs_f64();
    ca.close_and_wait().await;
    cb.close_and_wait().await;
    rate
}

struct Trickle(mpsc::UnboundedSender<RTCIceCandidateInit>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Trickle {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(init);
        }
    }
}

async fn bare_pc() -> (
    Arc<dyn PeerConnection>,
    Arc<dyn DataChannel>,
    mpsc::UnboundedReceiver<RTCIceCandidateInit>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_handler(Arc::new(Trickle(tx)))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .expect("bare peer connection");
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let dc = pc
        .create_data_channel(
            "bare",
            Some(RTCDataChannelInit {
                negotiated: Some(0),
                ..Default::default()
            }),
        )
        .await
        .expect("bare data channel");
    (pc, dc, rx)
}

/// MiB/s through a bare webrtc-rs data channel pair.
async fn bare_round(total_mib: usize) -> f64 {
    let (pa, da, mut ia) = bare_pc().await;
    let (pb, db, mut ib) = bare_pc().await;
    let offer = pa.create_offer(None).await.expect("offer");
    pa.set_local_description(offer.clone())
        .await
        .expect("local offer");
    pb.set_remote_description(offer)
        .await
        .expect("remote offer");
    let answer = pb.create_answer(None).await.expect("answer");
    pb.set_local_description(answer.clone())
        .await
        .expect("local answer");
    pa.set_remote_description(answer)
        .await
        .expect("remote answer");
    let (pa2, pb2) = (pa.clone(), pb.clone());
    tokio::spawn(async move {
        while let Some(c) = ia.recv().await {
            let _ = pb2.add_ice_candidate(c).await;
        }
    });
    tokio::spawn(async move {
        while let Some(c) = ib.recv().await {
            let _ = pa2.add_ice_candidate(c).await;
        }
    });
    da.set_buffered_amount_low_threshold(LOW_WATER)
        .await
        .expect("threshold");
    // Wait for both ends to open; keep reading a's events for the low-water wake-ups.
    let (low_tx, mut low_rx) = mpsc::unbounded_channel::<()>();
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<()>();
    let da2 = da.clone();
    tokio::spawn(async move {
        while let Some(ev) = da2.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    let _ = open_tx.send(());
                }
                DataChannelEvent::OnBufferedAmountLow => {
                    let _ = low_tx.send(());
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let (b_open_tx, mut b_open_rx) = mpsc::unbounded_channel::<()>();
    let db2 = db.clone();
    tokio::spawn(async move {
        let mut got = 0;
        while let Some(ev) = db2.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    let _ = b_open_tx.send(());
                }
                DataChannelEvent::OnMessage(m) => {
                    got += m.data.len();
                    if got >= total_mib * MIB {
                        let _ = done_tx.send(());
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    open_rx.recv().await.expect("a opens");
    b_open_rx.recv().await.expect("b opens");

    let chunk = BytesMut::from(&vec![0x5au8; 16 * 1024][..]);
    let start = Instant::now();
    for _ in 0..total_mib * 64 {
        while da.outstanding_bytes().await.unwrap_or(0) >= HIGH_WATER as usize {
            let _ = tokio::time::timeout(Duration::from_millis(50), low_rx.recv()).await;
        }
        da.send(chunk.clone()).await.expect("bare send");
    }
    done_rx.recv().await.expect("all bytes arrive");
    let rate = total_mib as f64 / start.elapsed().as_secs_f64();
    let _ = pa.close().await;
    let _ = pb.close().await;
    rate
}
