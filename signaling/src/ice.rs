//! The ICE servers a `welcome` (and a later `ice-servers` message) offers: the configured
//! STUN URLs as they are, and the TURN URLs with credentials in the form coturn's "TURN
//! REST API" expects (`use-auth-secret` with `static-auth-secret`):
//!
//! ```text
//! username   = "<unix time the credential expires>:<peer id, hex>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The TURN server recomputes the credential from the user name with the same secret and
//! refuses it after the expiry in the name, so the secret never leaves this process and
//! a leaked credential is worth at most one TTL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use rhizome::id::PeerId;
use rhizome::signal::IceServer;
use sha1::Sha1;

use crate::config::{Config, TurnSecret};

/// The ICE servers to offer `peer` now: empty when none are configured.
pub fn offer(config: &Config, peer: &PeerId) -> Vec<IceServer> {
    offer_at(config, peer, SystemTime::now())
}

/// [`offer`] at a given time.
pub fn offer_at(config: &Config, peer: &PeerId, now: SystemTime) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !config.stun.is_empty() {
        servers.push(IceServer {
            urls: config.stun.clone(),
            username: None,
            credential: None,
        });
    }
    if let (false, Some(secret)) = (config.turn.is_empty(), &config.turn_secret) {
        let expiry = now
            .checked_add(config.turn_ttl)
            .unwrap_or(now)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let username = format!("{expiry}:{peer}");
        let credential = credential(secret, &username);
        servers.push(IceServer {
            urls: config.turn.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    servers
}

/// How often a joined session gets fresh credentials: half their lifetime (at least a
/// second), so a client always holds ones valid for another half. `None` without TURN.
pub fn refresh_every(config: &Config) -> Option<Duration> {
    (!config.turn.is_empty() && config.turn_secret.is_some())
        .then(|| (config.turn_ttl / 2).max(Duration::from_secs(1)))
}

/// coturn's REST API credential for `username`: base64 of its HMAC-SHA1 under `secret`.
pub fn credential(secret: &TurnSecret, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.expose())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhizome::id::Identity;

    #[test]
    fn the_credential_matches_an_independent_hmac_sha1() {
        // Computed once with Python:
        //   base64.b64encode(hmac.new(b"rhizome-test-secret",
        //       b"1780000000:" + b"ab" * 32, hashlib.sha1).digest())
        let username = format!("1780000000:{}", "ab".repeat(32));
        assert_eq!(
            credential(&TurnSecret::new("rhizome-test-secret"), &username),
            "QTkdMZBDb1rzK3JcU6XTk3FnWxA="
        );
    }

    #[test]
    fn turn_servers_get_a_user_name_with_expiry_and_peer_and_stun_ones_none() {
        let peer = Identity::from_secret_bytes([4; 32]).peer_id();
        let config = Config {
            stun: vec!["stun:s:3478".into()],
            turn: vec!["turn:t:3478".into()],
            turn_secret: Some(TurnSecret::new("k")),
            turn_ttl: Duration::from_secs(600),
            ..Config::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let servers = offer_at(&config, &peer, now);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:s:3478"]);
        assert!(servers[0].username.is_none() && servers[0].credential.is_none());
        let user = servers[1].username.clone().unwrap();
        assert_eq!(user, format!("1000600:{peer}"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(credential(&TurnSecret::new("k"), &user).as_str())
        );
        assert_eq!(refresh_every(&config), Some(Duration::from_secs(300)));
        assert!(offer_at(&Config::default(), &peer, now).is_empty());
        assert_eq!(refresh_every(&Config::default()), None);
    }
}
