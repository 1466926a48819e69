//! The join-proof test vector printed in `signaling/PROTOCOL.md`, so implementers in other
//! languages can check their signing code against ours (Ed25519 is deterministic).

use rhizome::id::Identity;
use rhizome::signal::{join_proof_message, sign_join_proof, verify_join_proof, JOIN_PROOF_CONTEXT};

const SECRET: [u8; 32] = [7; 32];
const NONCE: &str = "n0nce";
const ROOM: &str = "lobby";

#[test]
fn the_join_proof_test_vector_in_protocol_md_holds() {
    let id = Identity::from_secret_bytes(SECRET);
    let message = join_proof_message(NONCE, ROOM);
    assert_eq!(hex(&message), "000000056e306e6365000000056c6f626279");
    let mut signed = (JOIN_PROOF_CONTEXT.len() as u16).to_be_bytes().to_vec();
    signed.extend_from_slice(JOIN_PROOF_CONTEXT);
    signed.extend_from_slice(&message);
    let proof = sign_join_proof(&id, NONCE, ROOM);
    println!("peer  {}", id.peer_id());
    println!("signed {}", hex(&signed));
    println!("proof {proof}");
    assert!(verify_join_proof(&id.peer_id(), NONCE, ROOM, &proof).is_ok());
    // The document wraps the proof over two lines.
    let doc: String = include_str!("../PROTOCOL.md").split_whitespace().collect();
    assert!(
        doc.contains(&id.peer_id().to_string()),
        "PROTOCOL.md shows the peer id"
    );
    assert!(
        doc.contains(&proof.to_string()),
        "PROTOCOL.md shows the proof"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
