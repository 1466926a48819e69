//! A small JSON codec for the handful of signaling shapes a client writes and reads.
//!
//! Why not serde_json: the browser package is measured in kilobytes, and a general JSON
//! library with its serde plumbing (internally tagged enums buffer through `Content`,
//! error messages format floats) cost about a sixth of the whole wasm binary. A client
//! only ever writes [`ClientMsg`], [`SignalPayload`] and [`SignedEnvelope`] and reads
//! [`ServerMsg`], [`SignalPayload`] and [`SignedEnvelope`], so it gets this instead: a
//! validating reader that hands out the raw text of each field, and writers for those
//! shapes. Natively the same functions run (the native client and the tests use them);
//! the server keeps serde_json. The tests check byte-for-byte agreement with serde_json,
//! which matters for [`SignalPayload`]: its JSON text is what gets signed.

use super::{
    ClientMsg, EnvelopeJson, ErrorCode, IceServer, ServerMsg, SignalPayload, SignedEnvelope,
};
use crate::id::{PeerId, Signature};

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON message: {0}")]
pub struct JsonError(pub &'static str);

type Result<T> = core::result::Result<T, JsonError>;

/// Deepest nesting accepted (serde_json's default recursion limit).
const MAX_DEPTH: u32 = 128;

// ---------------------------------------------------------------------------------------
// Writing

/// Builds one JSON object, fields in the order they are added.
struct Obj(String);

impl Obj {
    fn new() -> Self {
        Obj(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_str(&mut self.0, key);
        self.0.push(':');
    }

    fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(&mut self.0, value);
        self
    }

    fn u64(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        push_u64(&mut self.0, value);
        self
    }

    fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.0.push_str(json);
        self
    }

    fn hex(self, key: &str, bytes: &[u8]) -> Self {
        self.str(key, &hex::encode(bytes))
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A JSON string, escaped exactly as serde_json escapes it (`"`, `\`, and control
/// characters; `\u00xx` in lowercase hex for those without a short form).
fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Between ASCII bytes: always some (no panic path, see `Reader::since`).
        out.push_str(s.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

impl ClientMsg {
    /// The message as the JSON text frame a client sends.
    pub fn to_text(&self) -> String {
        match self {
            ClientMsg::Join { room, peer, proof } => Obj::new()
                .str("type", "join")
                .str("room", room)
                .hex("peer", peer.as_bytes())
                .hex("proof", proof.as_bytes())
                .end(),
            ClientMsg::Signal { to, envelope } => Obj::new()
                .str("type", "signal")
                .hex("to", to.as_bytes())
                .raw("envelope", &envelope_text(envelope))
                .end(),
            ClientMsg::Ping => Obj::new().str("type", "ping").end(),
        }
    }
}

impl SignalPayload {
    /// The payload's JSON text: what [`SignedEnvelope::seal`] signs.
    pub fn to_text(&self) -> String {
        match self {
            SignalPayload::Offer { sdp } => Obj::new().str("kind", "offer").str("sdp", sdp),
            SignalPayload::Answer { sdp } => Obj::new().str("kind", "answer").str("sdp", sdp),
            SignalPayload::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                let mut o = Obj::new()
                    .str("kind", "candidate")
                    .str("candidate", candidate);
                if let Some(mid) = sdp_mid {
                    o = o.str("sdp_mid", mid);
                }
                if let Some(index) = sdp_m_line_index {
                    o = o.u64("sdp_m_line_index", u64::from(*index));
                }
                o
            }
            SignalPayload::Abort => Obj::new().str("kind", "abort"),
        }
        .end()
    }

    /// Reads a payload from its JSON text.
    pub fn from_text(text: &str) -> Result<Self> {
        let f = Fields::parse(text)?;
        Ok(match f.str("kind")?.as_str() {
            "offer" => SignalPayload::Offer { sdp: f.str("sdp")? },
            "answer" => SignalPayload::Answer { sdp: f.str("sdp")? },
            "candidate" => SignalPayload::Candidate {
                candidate: f.str("candidate")?,
                sdp_mid: f.opt("sdp_mid", string)?,
                sdp_m_line_index: f.opt("sdp_m_line_index", |raw| {
                    u16::try_from(number(raw)?).map_err(|_| JsonError("number out of range"))
                })?,
            },
            "abort" => SignalPayload::Abort,
            _ => return Err(JsonError("unknown `kind`")),
        })
    }
}

impl SignedEnvelope {
    /// The envelope as JSON text.
    pub fn to_text(&self) -> String {
        Obj::new()
            .hex("from", self.from.as_bytes())
            .hex("to", self.to.as_bytes())
            .u64("attempt", self.attempt)
            .str("body", &self.body)
            .hex("sig", self.sig.as_bytes())
            .end()
    }

    /// Reads an envelope from JSON text.
    pub fn from_text(text: &str) -> Result<Self> {
        let f = Fields::parse_struct(text)?;
        Ok(SignedEnvelope {
            from: f.peer("from")?,
            to: f.peer("to")?,
            attempt: number(f.get("attempt")?)?,
            body: f.str("body")?,
            sig: f.req("sig", |raw| {
                string(raw)?
                    .parse::<Signature>()
                    .map_err(|_| JsonError("bad signature"))
            })?,
        })
    }
}

impl ServerMsg {
    /// Reads a text frame from the server.
    pub fn from_text(text: &str) -> Result<Self> {
        let f = Fields::parse(text)?;
        Ok(match f.str("type")?.as_str() {
            "hello" => ServerMsg::Hello {
                nonce: f.str("nonce")?,
                version: u32::try_from(number(f.get("version")?)?)
                    .map_err(|_| JsonError("number out of range"))?,
            },
            "welcome" => ServerMsg::Welcome {
                peers: f.req("peers", |raw| {
                    array(raw)?
                        .into_iter()
                        .map(peer_id)
                        .collect::<Result<Vec<_>>>()
                })?,
                ice_servers: f.opt("iceServers", ice_servers)?.unwrap_or_default(),
            },
            "ice-servers" => ServerMsg::IceServers {
                ice_servers: f.req("iceServers", ice_servers)?,
            },
            "signal" => ServerMsg::Signal {
                from: f.peer("from")?,
                envelope: envelope_from_text(f.get("envelope")?)?,
            },
            "pong" => ServerMsg::Pong,
            "error" => ServerMsg::Error {
                code: f.req("code", |raw| {
                    let code = string(raw)?;
                    ErrorCode::ALL
                        .into_iter()
                        .find(|c| c.as_str() == code)
                        .ok_or(JsonError("unknown error code"))
                })?,
                message: f.str("message")?,
                peer: f.opt("peer", peer_id)?,
            },
            _ => return Err(JsonError("unknown `type`")),
        })
    }
}

/// The envelope's JSON text, as it goes into a `signal` frame.
#[cfg(not(target_arch = "wasm32"))]
fn envelope_text(envelope: &EnvelopeJson) -> String {
    envelope.to_string()
}

#[cfg(target_arch = "wasm32")]
fn envelope_text(envelope: &EnvelopeJson) -> String {
    envelope.clone()
}

/// A relayed envelope out of its (already validated) JSON text.
#[cfg(not(target_arch = "wasm32"))]
fn envelope_from_text(raw: &str) -> Result<EnvelopeJson> {
    serde_json::from_str(raw).map_err(|_| JsonError("bad envelope"))
}

#[cfg(target_arch = "wasm32")]
fn envelope_from_text(raw: &str) -> Result<EnvelopeJson> {
    Ok(raw.to_string())
}

// ---------------------------------------------------------------------------------------
// Reading

/// The members of one JSON object, each with the raw (validated) text of its value.
struct Fields<'a>(Vec<(String, &'a str)>);

impl<'a> Fields<'a> {
    /// Parses `text` as exactly one JSON object (whitespace around it allowed).
    fn parse(text: &'a str) -> Result<Self> {
        Self::parse_with(text, false)
    }

    /// As [`Fields::parse`] for a plain struct, whose unknown fields serde_json skips
    /// without pairing the surrogates of their `\u` escapes (an internally tagged enum
    /// buffers and decodes them all, as `parse` does). Found by the differential tests.
    fn parse_struct(text: &'a str) -> Result<Self> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &'a str, lenient: bool) -> Result<Self> {
        let mut r = Reader {
            text,
            at: 0,
            lenient,
        };
        r.ws();
        if r.peek() != Some(b'{') {
            return Err(JsonError("expected an object"));
        }
        let mut fields = Vec::new();
        r.object(0, Some(&mut fields))?;
        r.ws();
        if r.at != text.len() {
            return Err(JsonError("trailing characters"));
        }
        Ok(Fields(fields))
    }

    /// The raw value of `key`, or `None`; a key given twice is an error (as with serde).
    fn find(&self, key: &str) -> Result<Option<&'a str>> {
        let mut found = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| *v);
        let first = found.next();
        if found.next().is_some() {
            return Err(JsonError("duplicate field"));
        }
        Ok(first)
    }

    fn get(&self, key: &str) -> Result<&'a str> {
        self.find(key)?.ok_or(JsonError("missing field"))
    }

    fn req<T>(&self, key: &str, read: impl FnOnce(&'a str) -> Result<T>) -> Result<T> {
        read(self.get(key)?)
    }

    /// An optional field: absent or `null` is `None`.
    fn opt<T>(&self, key: &str, read: impl FnOnce(&'a str) -> Result<T>) -> Result<Option<T>> {
        match self.find(key)? {
            None | Some("null") => Ok(None),
            Some(raw) => read(raw).map(Some),
        }
    }

    fn str(&self, key: &str) -> Result<String> {
        string(self.get(key)?)
    }

    fn peer(&self, key: &str) -> Result<PeerId> {
        peer_id(self.get(key)?)
    }
}

/// A peer id from the raw text of a JSON string.
fn peer_id(raw: &str) -> Result<PeerId> {
    string(raw)?
        .parse::<PeerId>()
        .map_err(|_| JsonError("bad peer id"))
}

/// A list of ICE servers (`[{urls, username?, credential?}]`, `urls` a string or an
/// array of strings, as in `RTCIceServer`) from the raw text of a JSON array.
fn ice_servers(raw: &str) -> Result<Vec<IceServer>> {
    array(raw)?
        .into_iter()
        .map(|item| {
            let f = Fields::parse(item)?;
            let urls = f.get("urls")?;
            let urls = if urls.starts_with('[') {
                array(urls)?
                    .into_iter()
                    .map(string)
                    .collect::<Result<Vec<_>>>()?
            } else {
                vec![string(urls)?]
            };
            Ok(IceServer {
                urls,
                username: f.opt("username", string)?,
                credential: f.opt("credential", string)?,
            })
        })
        .collect()
}

/// A string from the raw text of a JSON value.
fn string(raw: &str) -> Result<String> {
    let mut r = Reader {
        text: raw,
        at: 0,
        lenient: false,
    };
    let s = r.string(true)?;
    if r.at != raw.len() {
        return Err(JsonError("expected a string"));
    }
    Ok(s)
}

/// A non-negative integer from the raw text of a JSON value.
fn number(raw: &str) -> Result<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(JsonError("expected a non-negative integer"));
    }
    raw.parse().map_err(|_| JsonError("number out of range"))
}

/// The raw text of each element of a JSON array.
fn array(raw: &str) -> Result<Vec<&str>> {
    let mut r = Reader {
        text: raw,
        at: 0,
        lenient: false,
    };
    if r.peek() != Some(b'[') {
        return Err(JsonError("expected an array"));
    }
    let mut items = Vec::new();
    r.array(0, Some(&mut items))?;
    Ok(items)
}

/// A cursor over JSON text that checks the grammar as it goes.
struct Reader<'a> {
    text: &'a str,
    at: usize,
    /// Skipped values' strings may hold unpaired surrogate escapes (see
    /// [`Fields::parse_struct`]); a top-level key is still decoded strictly.
    lenient: bool,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn bump(&mut self) -> Result<u8> {
        let b = self.peek().ok_or(JsonError("unexpected end"))?;
        self.at += 1;
        Ok(b)
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        if self.bump()? == b {
            Ok(())
        } else {
            Err(JsonError("unexpected character"))
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips one value (after whitespace) and returns its raw text.
    fn value(&mut self, depth: u32) -> Result<&'a str> {
        self.ws();
        let start = self.at;
        match self.peek().ok_or(JsonError("unexpected end"))? {
            b'{' => self.object(depth + 1, None)?,
            b'[' => self.array(depth + 1, None)?,
            b'"' => {
                self.string(!self.lenient)?;
            }
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            _ => self.number()?,
        }
        self.since(start)
    }

    /// The text from `start` to here. It starts and ends at ASCII bytes, so `get` always
    /// succeeds; unlike indexing it has no panic path (whose message formatting is
    /// ~4 KB of wasm).
    fn since(&self, start: usize) -> Result<&'a str> {
        self.text
            .get(start..self.at)
            .ok_or(JsonError("not at a char boundary"))
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self.text.as_bytes()[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            Err(JsonError("unexpected character"))
        }
    }

    fn digits(&mut self) -> Result<()> {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        if self.at == start {
            return Err(JsonError("expected a digit"));
        }
        Ok(())
    }

    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        if self.peek() == Some(b'0') {
            self.at += 1;
        } else {
            self.digits()?;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    /// An object starting at `{`; its members go into `fields` if given.
    fn object(
        &mut self,
        depth: u32,
        mut fields: Option<&mut Vec<(String, &'a str)>>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(JsonError("nested too deeply"));
        }
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string(!self.lenient || depth == 0)?;
            self.ws();
            self.expect(b':')?;
            let value = self.value(depth)?;
            if let Some(fields) = fields.as_deref_mut() {
                fields.push((key, value));
            }
            self.ws();
            match self.bump()? {
                b',' => continue,
                b'}' => return Ok(()),
                _ => return Err(JsonError("expected `,` or `}`")),
            }
        }
    }

    /// An array starting at `[`; the raw text of its elements goes into `items` if given.
    fn array(&mut self, depth: u32, mut items: Option<&mut Vec<&'a str>>) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(JsonError("nested too deeply"));
        }
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let value = self.value(depth)?;
            if let Some(items) = items.as_deref_mut() {
                items.push(value);
            }
            self.ws();
            match self.bump()? {
                b',' => continue,
                b']' => return Ok(()),
                _ => return Err(JsonError("expected `,` or `]`")),
            }
        }
    }

    /// A string starting at `"`, unescaped; with `strict` false, an unpaired surrogate
    /// escape is taken as U+FFFD instead of refused.
    fn string(&mut self, strict: bool) -> Result<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(self.since(start)?);
            match self.bump()? {
                b'"' => return Ok(out),
                b'\\' => {}
                _ => return Err(JsonError("control character in string")),
            }
            let c = match self.bump()? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' if strict => self.unicode_escape()?,
                b'u' => {
                    self.hex4()?;
                    '\u{fffd}'
                }
                _ => return Err(JsonError("bad escape")),
            };
            out.push(c);
        }
    }

    /// The character of a `\u` escape (the `\u` already read), joining surrogate pairs.
    fn unicode_escape(&mut self) -> Result<char> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                self.expect(b'\\')?;
                self.expect(b'u')?;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(JsonError("bad surrogate pair"));
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(JsonError("bad surrogate pair")),
            c => c,
        };
        char::from_u32(code).ok_or(JsonError("bad escape"))
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = (self.bump()? as char)
                .to_digit(16)
                .ok_or(JsonError("bad escape"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
}

// The tests compare with serde_json, which the browser build does not have.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::id::Identity;

    fn payloads() -> Vec<SignalPayload> {
        let awkward = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=\"quoted\" \\ back\tslash \u{1} \u{1f} \u{7f} é 😀 </script>";
        vec![
            SignalPayload::Offer {
                sdp: awkward.into(),
            },
            SignalPayload::Answer { sdp: String::new() },
            SignalPayload::Candidate {
                candidate: "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(65535),
            },
            SignalPayload::Candidate {
                candidate: awkward.into(),
                sdp_mid: None,
                sdp_m_line_index: Some(0),
            },
            SignalPayload::Candidate {
                candidate: String::new(),
                sdp_mid: Some("\u{8}\u{c}".into()),
                sdp_m_line_index: None,
            },
            SignalPayload::Abort,
        ]
    }

    #[test]
    fn payloads_are_written_byte_for_byte_as_serde_json_writes_them() {
        // The payload text is what gets signed: peers running an older build (serde_json)
        // and this codec must produce and accept the same bytes.
        for p in payloads() {
            assert_eq!(p.to_text(), serde_json::to_string(&p).unwrap());
            assert_eq!(SignalPayload::from_text(&p.to_text()).unwrap(), p);
        }
    }

    #[test]
    fn envelopes_and_client_messages_match_serde_json() {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        for (i, p) in payloads().iter().enumerate() {
            let env = SignedEnvelope::seal(&a, b.peer_id(), u64::MAX - i as u64, p);
            assert_eq!(env.to_text(), serde_json::to_string(&env).unwrap());
            assert_eq!(SignedEnvelope::from_text(&env.to_text()).unwrap(), env);
            let signal = ClientMsg::Signal {
                to: b.peer_id(),
                envelope: env.to_json(),
            };
            assert_eq!(signal.to_text(), serde_json::to_string(&signal).unwrap());
        }
        let join = ClientMsg::Join {
            room: "lobby \"1\"".into(),
            peer: a.peer_id(),
            proof: super::super::sign_join_proof(&a, "n", "lobby"),
        };
        assert_eq!(join.to_text(), serde_json::to_string(&join).unwrap());
        assert_eq!(ClientMsg::Ping.to_text(), r#"{"type":"ping"}"#);
    }

    #[test]
    fn every_server_message_reads_as_serde_json_reads_it() {
        let a = Identity::from_secret_bytes([1; 32]).peer_id();
        let b = Identity::from_secret_bytes([2; 32]).peer_id();
        let mut msgs = vec![
            ServerMsg::Hello {
                nonce: "9f2c".into(),
                version: 1,
            },
            ServerMsg::Welcome {
                peers: vec![],
                ice_servers: vec![],
            },
            ServerMsg::Welcome {
                peers: vec![a, b],
                ice_servers: vec![],
            },
            ServerMsg::Welcome {
                peers: vec![a],
                ice_servers: ice(),
            },
            ServerMsg::IceServers { ice_servers: ice() },
            ServerMsg::IceServers {
                ice_servers: vec![],
            },
            ServerMsg::Signal {
                from: a,
                envelope: serde_json::json!({"x": [1, -2.5e3, null, true, {"y": "\u{2028}"}]}),
            },
            ServerMsg::Pong,
            ServerMsg::Error {
                code: ErrorCode::UnknownPeer,
                message: "gone".into(),
                peer: Some(b),
            },
        ];
        for code in ErrorCode::ALL {
            msgs.push(ServerMsg::Error {
                code,
                message: code.as_str().into(),
                peer: None,
            });
        }
        for m in msgs {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(ServerMsg::from_text(&text).unwrap(), m, "{text}");
            let pretty = serde_json::to_string_pretty(&m).unwrap();
            assert_eq!(ServerMsg::from_text(&pretty).unwrap(), m, "{pretty}");
        }
    }

    fn ice() -> Vec<IceServer> {
        vec![
            IceServer {
                urls: vec!["stun:198.51.100.1:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:198.51.100.1:3478?transport=udp".into(),
                    "turns:turn.example:443".into(),
                ],
                username: Some(format!("1780000000:{}", "ab".repeat(32))),
                credential: Some("k2P/+x==".into()),
            },
        ]
    }

    #[test]
    fn ice_servers_in_a_welcome_are_read_and_absent_ones_are_none() {
        let a = Identity::from_secret_bytes([1; 32]).peer_id();
        let welcome = ServerMsg::Welcome {
            peers: vec![a],
            ice_servers: ice(),
        };
        let v = serde_json::to_value(&welcome).unwrap();
        assert_eq!(
            v["iceServers"][1]["username"],
            ice()[1].username.clone().unwrap()
        );
        assert!(v["iceServers"][0].get("username").is_none());
        // An old server's welcome, and an empty list, which a new server omits.
        let old = format!(r#"{{"type":"welcome","peers":["{a}"]}}"#);
        let empty = ServerMsg::Welcome {
            peers: vec![a],
            ice_servers: vec![],
        };
        assert_eq!(ServerMsg::from_text(&old).unwrap(), empty);
        assert_eq!(serde_json::to_string(&empty).unwrap(), old);
        // `urls` may be one string (as RTCIceServer allows); null optional fields are absent.
        let text = r#"{"type":"ice-servers","iceServers":[{"urls":"stun:x","username":null}]}"#;
        assert_eq!(
            ServerMsg::from_text(text).unwrap(),
            ServerMsg::IceServers {
                ice_servers: vec![IceServer {
                    urls: vec!["stun:x".into()],
                    username: None,
                    credential: None,
                }],
            }
        );
        for bad in [
            r#"{"type":"ice-servers"}"#,
            r#"{"type":"ice-servers","iceServers":{}}"#,
            r#"{"type":"ice-servers","iceServers":[{}]}"#,
            r#"{"type":"ice-servers","iceServers":[{"urls":7}]}"#,
            r#"{"type":"ice-servers","iceServers":[{"urls":["a",1]}]}"#,
            r#"{"type":"ice-servers","iceServers":[{"urls":"a","credential":1}]}"#,
            r#"{"type":"welcome","peers":[],"iceServers":"x"}"#,
        ] {
            assert!(ServerMsg::from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readers_accept_what_serde_accepts_around_the_fields() {
        // Unknown fields are ignored, order does not matter, escapes are decoded.
        let text = r#" {"sdp":"a\/b\u00e9\ud83d\ude00","extra":{"n":[1,2]},"kind":"offer"} "#;
        assert_eq!(
            SignalPayload::from_text(text).unwrap(),
            SignalPayload::Offer {
                sdp: "a/bé😀".into()
            }
        );
        let text = r#"{"kind":"candidate","candidate":"c","sdp_mid":null}"#;
        assert_eq!(
            SignalPayload::from_text(text).unwrap(),
            SignalPayload::Candidate {
                candidate: "c".into(),
                sdp_mid: None,
                sdp_m_line_index: None
            }
        );
    }

    #[test]
    fn malformed_frames_are_errors_never_panics() {
        let bad = [
            "",
            "{",
            "[]",
            "\"x\"",
            r#"{"type":"pong"} x"#,
            r#"{"type":"pong","type":"pong"}"#,
            r#"{"type":"nope"}"#,
            r#"{"type":"hello","nonce":"n"}"#,
            r#"{"type":"hello","nonce":"n","version":-1}"#,
            r#"{"type":"hello","nonce":"n","version":1.5}"#,
            r#"{"type":"hello","nonce":"n","version":99999999999}"#,
            r#"{"type":"welcome","peers":["00"]}"#,
            r#"{"type":"welcome","peers":"x"}"#,
            r#"{"type":"error","code":"new-code","message":"m"}"#,
            r#"{"type":"signal","from":"zz","envelope":{}}"#,
            r#"{"type":"signal","envelope":{}}"#,
            r#"{"type":"pong","x":"\ud800"}"#,
            r#"{"type":"pong","x":"\q"}"#,
            "{\"type\":\"pong\",\"x\":\"\n\"}",
            r#"{"type":"pong","x":01}"#,
            r#"{"type":"pong","x":tru}"#,
            r#"{"type":"pong",}"#,
            r#"{"type":"pong" "x":1}"#,
            r#"{"type":"pong","x":"é"#,
        ];
        for text in bad {
            assert!(ServerMsg::from_text(text).is_err(), "{text}");
            assert!(
                serde_json::from_str::<ServerMsg>(text).is_err(),
                "serde_json agrees: {text}"
            );
        }
        let deep = "[".repeat(10_000);
        let text = format!(r#"{{"type":"pong","x":{deep}}}"#);
        assert!(ServerMsg::from_text(&text).is_err());
        assert!(SignedEnvelope::from_text(r#"{"from":1}"#).is_err());
        assert!(SignalPayload::from_text(
            r#"{"kind":"candidate","candidate":"c","sdp_m_line_index":70000}"#
        )
        .is_err());
    }

    // ---- Differential property tests against serde_json (issue 20, item 6) ----

    use proptest::prelude::*;

    fn arb_text() -> impl Strategy<Value = String> {
        // Every char, weighted toward the ones JSON escapes or that break naive codecs.
        let special = prop_oneof![
            Just('"'),
            Just('\\'),
            Just('/'),
            Just('\u{0}'),
            Just('\u{1f}'),
            Just('\u{7f}'),
            Just('\u{2028}'),
            Just('\u{fffd}'),
            Just('\u{10ffff}'),
            Just('\r'),
            Just('\n'),
            Just('\t'),
        ];
        prop::collection::vec(prop_oneof![3 => any::<char>(), 2 => special], 0..24)
            .prop_map(|v| v.into_iter().collect())
    }

    fn arb_peer() -> impl Strategy<Value = PeerId> {
        any::<[u8; 32]>().prop_map(PeerId::from_bytes)
    }

    fn arb_payload() -> impl Strategy<Value = SignalPayload> {
        prop_oneof![
            arb_text().prop_map(|sdp| SignalPayload::Offer { sdp }),
            arb_text().prop_map(|sdp| SignalPayload::Answer { sdp }),
            (
                arb_text(),
                prop::option::of(arb_text()),
                prop::option::of(any::<u16>())
            )
                .prop_map(|(candidate, sdp_mid, sdp_m_line_index)| {
                    SignalPayload::Candidate {
                        candidate,
                        sdp_mid,
                        sdp_m_line_index,
                    }
                }),
            Just(SignalPayload::Abort),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = SignedEnvelope> {
        (
            arb_peer(),
            arb_peer(),
            any::<u64>(),
            arb_text(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(from, to, attempt, body, half)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&half);
                sig[32..].copy_from_slice(&half);
                SignedEnvelope {
                    from,
                    to,
                    attempt,
                    body,
                    sig: Signature::from_bytes(sig),
                }
            })
    }

    fn arb_server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (arb_text(), any::<u32>())
                .prop_map(|(nonce, version)| ServerMsg::Hello { nonce, version }),
            prop::collection::vec(arb_peer(), 0..4).prop_map(|peers| ServerMsg::Welcome {
                peers,
                ice_servers: Vec::new(),
            }),
            (arb_peer(), arb_envelope()).prop_map(|(from, e)| ServerMsg::Signal {
                from,
                envelope: e.to_json(),
            }),
            Just(ServerMsg::Pong),
            (
                0..ErrorCode::ALL.len(),
                arb_text(),
                prop::option::of(arb_peer())
            )
                .prop_map(|(i, message, peer)| ServerMsg::Error {
                    code: ErrorCode::ALL[i],
                    message,
                    peer,
                }),
        ]
    }

    /// Bytes an adversary splices into a valid frame: JSON's structural characters,
    /// escapes, number and literal fragments, whitespace, and other text.
    fn arb_splice() -> impl Strategy<Value = String> {
        let pieces: Vec<&'static str> = vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "\\u",
            "\\ud800",
            "\\udc00",
            "\\ud83d\\ude00",
            "\\n",
            "\\x",
            "0",
            "-",
            "-0",
            "01",
            "1e5",
            "1.5",
            "1E-2",
            "18446744073709551616",
            "4294967296",
            "65536",
            "true",
            "fals",
            "null",
            "nul",
            " ",
            "\t",
            "\n",
            "\r",
            "\u{b}",
            "\u{a0}",
            "\u{feff}",
            "\"type\"",
            "\"pong\"",
            "\"kind\"",
            "\"offer\"",
            "\"sdp\"",
            "\"peers\"",
            "\"version\"",
            "é",
            "😀",
        ];
        prop_oneof![
            prop::sample::select(pieces).prop_map(String::from),
            arb_text(),
        ]
    }

    /// A mutation of `text`: up to three splices or deletions at arbitrary char
    /// positions.
    fn mutate(text: &str, edits: &[(usize, usize, String)]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, del, ins) in edits {
            let at = at % (chars.len() + 1);
            let end = (at + del % 4).min(chars.len());
            chars.splice(at..end, ins.chars());
        }
        chars.into_iter().collect()
    }

    /// Both readers agree: both refuse, or both accept with the same value.
    fn agree<T>(
        text: &str,
        ours: Result<T>,
        theirs: serde_json::Result<T>,
    ) -> std::result::Result<(), TestCaseError>
    where
        T: PartialEq + std::fmt::Debug,
    {
        match (ours, theirs) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", text),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(
                false,
                "disagree on {:?}: ours {:?}, serde_json {:?}",
                text,
                a,
                b
            ),
        }
        Ok(())
    }

    /// A raw JSON-ish value: valid and invalid numbers, strings and literals where a
    /// reader's checks matter, and nested arrays and objects.
    fn arb_raw_value() -> impl Strategy<Value = String> {
        let numbers = prop::sample::select(vec![
            "0",
            "1",
            "7",
            "-0",
            "-1",
            "01",
            "00",
            "1.0",
            "1.",
            ".5",
            "+1",
            "1e2",
            "1E+2",
            "1e-2",
            "1e",
            "0x1",
            "65535",
            "65536",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "1_0",
            "Infinity",
            "NaN",
        ])
        .prop_map(String::from);
        let strings = prop_oneof![
            arb_text().prop_map(|t| serde_json::to_string(&t).unwrap()),
            prop::sample::select(vec![
                r#""\ud800""#,
                r#""\udc00\ud800""#,
                r#""\ud83d\ude00""#,
                r#""\u00e9""#,
                r#""\u00""#,
                r#""a\/b""#,
                r#""\x""#,
                "\"\t\"",
                "\"\u{0}\"",
                r#""\""#,
                "\"é",
                r#""\U0041""#,
            ])
            .prop_map(String::from),
        ];
        let literals = prop::sample::select(vec!["true", "false", "null", "tru", "nul", "True"])
            .prop_map(String::from);
        let leaf = prop_oneof![numbers, strings, literals];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((arb_text(), inner), 0..3).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// A frame shaped like the signaling messages: a random set (with repeats) of their
    /// field names, each with a value that is right for it, or any raw value, and odd
    /// whitespace. Near-valid, so the readers' checks of each field are what decide.
    fn arb_near_frame() -> impl Strategy<Value = String> {
        let hex = |n: usize| {
            prop::collection::vec(any::<u8>(), n).prop_map(|b| format!("\"{}\"", hex::encode(b)))
        };
        let good = prop_oneof![
            prop::sample::select(vec![
                r#""hello""#,
                r#""welcome""#,
                r#""signal""#,
                r#""pong""#,
                r#""error""#,
                r#""offer""#,
                r#""answer""#,
                r#""candidate""#,
                r#""abort""#,
                r#""Pong""#,
                r#""unknown-peer""#,
                r#""room-full""#,
                r#""nope""#,
                "[]",
            ])
            .prop_map(String::from),
            hex(32),
            hex(64),
            hex(31),
            prop::collection::vec(hex(32), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
            arb_envelope().prop_map(|e| e.to_text()),
        ];
        let value = prop_oneof![good, arb_raw_value()];
        let name = prop::sample::select(FIELD_NAMES);
        let space = prop::sample::select(vec!["", "", " ", "\n\t", "\r\n ", "\u{a0}", "\u{b}"]);
        prop::collection::vec((name, value, space), 0..7).prop_map(|fields| {
            let body: Vec<String> = fields
                .into_iter()
                .map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    /// Every field name the protocol's messages use, and one they do not.
    const FIELD_NAMES: &[&str] = &[
        "type",
        "kind",
        "nonce",
        "version",
        "peers",
        "from",
        "to",
        "envelope",
        "code",
        "message",
        "peer",
        "sdp",
        "candidate",
        "sdp_mid",
        "sdp_m_line_index",
        "attempt",
        "body",
        "sig",
        "x",
    ];

    /// A valid message (as serde_json writes it) with one to three of its fields
    /// replaced by, or joined by, raw values (or a field removed or repeated).
    fn edited(value: serde_json::Value, edits: &[(u8, usize, &str, String)]) -> String {
        let serde_json::Value::Object(map) = value else {
            return String::new();
        };
        let mut fields: Vec<(String, String)> =
            map.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        for (op, at, name, raw) in edits {
            let i = at % fields.len().max(1);
            match op % 4 {
                0 if !fields.is_empty() => fields[i].1 = raw.clone(),
                1 => fields.insert(i.min(fields.len()), (name.to_string(), raw.clone())),
                2 if !fields.is_empty() => {
                    fields.remove(i);
                }
                _ if !fields.is_empty() => fields.push(fields[i].clone()),
                _ => {}
            }
        }
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    fn arb_edits() -> impl Strategy<Value = Vec<(u8, usize, &'static str, String)>> {
        let name = prop::sample::select(FIELD_NAMES);
        prop::collection::vec((any::<u8>(), any::<usize>(), name, arb_raw_value()), 1..3)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn readers_agree_with_serde_json_on_edited_messages(
            m in arb_server_msg(),
            p in arb_payload(),
            e in arb_envelope(),
            edits in arb_edits(),
        ) {
            let text = edited(serde_json::to_value(&m).unwrap(), &edits);
            agree(&text, ServerMsg::from_text(&text), serde_json::from_str(&text))?;
            let text = edited(serde_json::to_value(&p).unwrap(), &edits);
            agree(&text, SignalPayload::from_text(&text), serde_json::from_str(&text))?;
            let text = edited(serde_json::to_value(&e).unwrap(), &edits);
            agree(&text, SignedEnvelope::from_text(&text), serde_json::from_str(&text))?;
        }

        #[test]
        fn readers_agree_with_serde_json_on_near_valid_frames(text in arb_near_frame()) {
            agree(&text, ServerMsg::from_text(&text), serde_json::from_str(&text))?;
            agree(&text, SignalPayload::from_text(&text), serde_json::from_str(&text))?;
            agree(&text, SignedEnvelope::from_text(&text), serde_json::from_str(&text))?;
        }

        #[test]
        fn writers_match_serde_json_byte_for_byte(p in arb_payload(), e in arb_envelope(), room in arb_text(), to in arb_peer()) {
            prop_assert_eq!(p.to_text(), serde_json::to_string(&p).unwrap());
            prop_assert_eq!(SignalPayload::from_text(&p.to_text()).unwrap(), p);
            prop_assert_eq!(e.to_text(), serde_json::to_string(&e).unwrap());
            prop_assert_eq!(SignedEnvelope::from_text(&e.to_text()).unwrap(), e.clone());
            let signal = ClientMsg::Signal { to, envelope: e.to_json() };
            prop_assert_eq!(signal.to_text(), serde_json::to_string(&signal).unwrap());
            let join = ClientMsg::Join { room, peer: to, proof: e.sig };
            prop_assert_eq!(join.to_text(), serde_json::to_string(&join).unwrap());
        }

        #[test]
        fn readers_read_what_serde_json_writes(m in arb_server_msg(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&m).unwrap()
            } else {
                serde_json::to_string(&m).unwrap()
            };
            prop_assert_eq!(ServerMsg::from_text(&text).unwrap(), m);
        }

        #[test]
        fn readers_agree_with_serde_json_on_mutated_frames(
            m in arb_server_msg(),
            p in arb_payload(),
            e in arb_envelope(),
            edits in prop::collection::vec((any::<usize>(), any::<usize>(), arb_splice()), 1..4),
        ) {
            let text = mutate(&serde_json::to_string(&m).unwrap(), &edits);
            agree(&text, ServerMsg::from_text(&text), serde_json::from_str(&text))?;
            let text = mutate(&p.to_text(), &edits);
            agree(&text, SignalPayload::from_text(&text), serde_json::from_str(&text))?;
            let text = mutate(&e.to_text(), &edits);
            agree(&text, SignedEnvelope::from_text(&text), serde_json::from_str(&text))?;
        }

        #[test]
        fn readers_agree_with_serde_json_on_token_soup(
            parts in prop::collection::vec(arb_splice(), 0..24),
        ) {
            let text: String = parts.concat();
            agree(&text, ServerMsg::from_text(&text), serde_json::from_str(&text))?;
            agree(&text, SignalPayload::from_text(&text), serde_json::from_str(&text))?;
            agree(&text, SignedEnvelope::from_text(&text), serde_json::from_str(&text))?;
        }
    }
}
