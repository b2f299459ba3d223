//! The node-to-node handshake, as a pure state machine (docs/PROTOCOL.md,
//! "Handshake").
//!
//! Both sides send `Hello { version, name, nonce }` as soon as the
//! connection is up. On the peer's `Hello`, each side checks it and sends
//! `Proof { mac }`; on the peer's `Proof`, each side verifies it and the
//! handshake is done. The MAC covers both names and both nonces and is keyed
//! with the cookie, so the cookie never crosses the wire, and a proof
//! recorded from an earlier handshake does not match the fresh nonce of the
//! next one. The sender's role is part of the MAC input, so a proof sent
//! back to the node that made it ("reflection") does not verify either.
//!
//! The checks on the peer's `Hello` include the dial rule ([`should_dial`]):
//! only the node whose name sorts lower dials, so an acceptor refuses a
//! dialer whose name sorts above its own.
//!
//! The peer's frames always arrive in the order `Hello`, `Proof` (it sends
//! its proof only after it has our `Hello`), so each input frame yields
//! exactly one step: the peer's `Hello` yields [`HandshakeStep::Send`] of our
//! proof, the peer's `Proof` yields [`HandshakeStep::Done`].
//!
//! Nothing here reads a clock or draws randomness: the nonce is passed in,
//! and the deadline is kept by [`crate::cluster::conn::PeerConn`].

use crate::cluster::frame::{Frame, MAC_BYTES, NONCE_BYTES, PROTOCOL_VERSION};
use crate::proto::ids::NodeName;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// First bytes of every MAC input. Separates these MACs from any other use
/// of the cookie, and names the protocol version whose rules they follow.
pub const MAC_CONTEXT: &[u8] = b"pairlink/1 ";

/// Which end of the connection a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the connection.
    Dialer,
    /// Accepted it.
    Acceptor,
}

impl Role {
    /// The label of a proof sent by this role (part of the MAC input).
    pub fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        }
    }

    /// The other end's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// Whether `me` dials `peer`: only the node whose name sorts lower (byte by
/// byte) dials, the other only accepts, so two nodes never race to open
/// two connections to each other.
pub fn should_dial(me: &NodeName, peer: &NodeName) -> bool {
    me.as_bytes() < peer.as_bytes()
}

/// Computes the proof that `sender` sends: HMAC-SHA256 keyed with the cookie
/// over [`MAC_CONTEXT`], the sender's role label, the dialer's name and the
/// acceptor's name (each after a one-byte length), the dialer's nonce and
/// the acceptor's nonce.
pub fn proof_mac(
    cookie: &[u8],
    sender: Role,
    dialer: &NodeName,
    acceptor: &NodeName,
    dialer_nonce: &[u8; NONCE_BYTES],
    acceptor_nonce: &[u8; NONCE_BYTES],
) -> [u8; MAC_BYTES] {
    mac_state(
        cookie,
        sender,
        dialer,
        acceptor,
        dialer_nonce,
        acceptor_nonce,
    )
    .finalize()
    .into_bytes()
    .into()
}

fn mac_state(
    cookie: &[u8],
    sender: Role,
    dialer: &NodeName,
    acceptor: &NodeName,
    dialer_nonce: &[u8; NONCE_BYTES],
    acceptor_nonce: &[u8; NONCE_BYTES],
) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this
    // cannot fail; the cookie is our own configuration, not peer input.
    let mut mac = HmacSha256::new_from_slice(cookie).expect("HMAC accepts keys of any length");
    mac.update(MAC_CONTEXT);
    mac.update(sender.label());
    for name in [dialer, acceptor] {
        // Node names are at most 32 bytes by their type, so the length fits.
        mac.update(&[name.len() as u8]);
        mac.update(name.as_bytes());
    }
    mac.update(dialer_nonce);
    mac.update(acceptor_nonce);
    mac
}

/// Why a handshake failed. Each ends the connection with a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer's `Hello` carries another protocol version.
    BadVersion(u8),
    /// The peer's name is not one of this node's configured peers.
    UnknownNode(NodeName),
    /// The peer claims this node's own name (a node dialed itself, or two
    /// nodes share a name).
    SelfConnect,
    /// The dialer reached a node of another name than the one it dialed.
    WrongNode {
        /// The name dialed.
        expected: NodeName,
        /// The name in the peer's `Hello`.
        got: NodeName,
    },
    /// The dialer's name sorts higher than ours: it should not have dialed
    /// (see [`should_dial`]); accepting would let two connections race.
    WrongDirection(NodeName),
    /// The peer's proof does not verify: another cookie, or a replayed or
    /// reflected proof.
    BadProof,
    /// A frame the handshake does not expect now (names the frame, or says
    /// that the handshake has already ended).
    Unexpected(&'static str),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadVersion(v) => write!(
                f,
                "peer speaks protocol version {v}, this node speaks {PROTOCOL_VERSION}"
            ),
            HandshakeError::UnknownNode(name) => {
                write!(
                    f,
                    "peer calls itself {name:?}, which is not a configured peer"
                )
            }
            HandshakeError::SelfConnect => {
                write!(f, "peer claims this node's own name (connected to itself?)")
            }
            HandshakeError::WrongNode { expected, got } => {
                write!(f, "dialed {expected:?} but the peer calls itself {got:?}")
            }
            HandshakeError::WrongDirection(name) => write!(
                f,
                "{name:?} dialed this node, but only the node whose name sorts lower dials"
            ),
            HandshakeError::BadProof => write!(
                f,
                "peer's proof does not verify (another cookie, or a replayed handshake)"
            ),
            HandshakeError::Unexpected(what) => {
                write!(f, "unexpected {what} during the handshake")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// What the caller does after a frame was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeStep {
    /// Send this frame (our `Proof`) to the peer.
    Send(Frame),
    /// The peer is authenticated; the connection carries node frames now.
    Done {
        /// The peer's node name, checked as described in [`Handshake::handle`].
        peer: NodeName,
    },
}

#[derive(Clone)]
enum State {
    /// Our `Hello` is out; waiting for the peer's.
    AwaitHello,
    /// Our `Proof` is out; waiting for the peer's.
    AwaitProof {
        peer: NodeName,
        peer_nonce: [u8; NONCE_BYTES],
    },
    /// Both proofs verified.
    Done,
    /// An error was returned; the connection is to be closed.
    Failed,
}

/// One side of one handshake.
///
/// `Debug` shows the state but never the cookie.
#[derive(Clone)]
pub struct Handshake {
    role: Role,
    me: NodeName,
    /// The shared secret; only ever used as the HMAC key.
    cookie: Vec<u8>,
    /// Our fresh nonce, sent in our `Hello`.
    nonce: [u8; NONCE_BYTES],
    /// For a dialer, the name it dialed: the peer must carry it, or the
    /// address in `--peer` points at another node.
    dialed: Option<NodeName>,
    state: State,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::AwaitHello => "await_hello",
            State::AwaitProof { .. } => "await_proof",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("me", &self.me)
            .field("dialed", &self.dialed)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake and returns it with our `Hello`, to be sent at once.
    ///
    /// `nonce` must be fresh random bytes (from the OS source), never
    /// reused: it is what makes a recorded handshake useless. `dialed` is,
    /// for a dialer, the name of the node it dialed (its `Hello` must carry
    /// that name); an acceptor passes `None`, and so may a dialer that
    /// accepts whichever known node answers.
    pub fn new(
        role: Role,
        me: NodeName,
        cookie: Vec<u8>,
        nonce: [u8; NONCE_BYTES],
        dialed: Option<NodeName>,
    ) -> (Handshake, Frame) {
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            name: me.clone(),
            nonce,
        };
        let handshake = Handshake {
            role,
            me,
            cookie,
            nonce,
            dialed,
            state: State::AwaitHello,
        };
        (handshake, hello)
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether both proofs have verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Handles a frame from the peer.
    ///
    /// The peer's `Hello` must carry [`PROTOCOL_VERSION`], not our own name,
    /// for a dialer the name it dialed, a name for which `known` is true,
    /// and for an acceptor a name that sorts below ours ([`should_dial`]);
    /// then our `Proof` is returned to send. The peer's `Proof` must
    /// verify (compared in constant time); then the handshake is done.
    ///
    /// # Errors
    ///
    /// Any failed check, any frame other than the expected one (a second
    /// `Hello`, a `Proof` first, a node frame), and any frame after the
    /// handshake ended or failed. After an error the handshake stays failed;
    /// the caller closes the connection and logs the error.
    pub fn handle(
        &mut self,
        frame: Frame,
        known: &dyn Fn(&NodeName) -> bool,
    ) -> Result<HandshakeStep, HandshakeError> {
        let result = self.step(frame, known);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn step(
        &mut self,
        frame: Frame,
        known: &dyn Fn(&NodeName) -> bool,
    ) -> Result<HandshakeStep, HandshakeError> {
        match (&self.state, frame) {
            (
                State::AwaitHello,
                Frame::Hello {
                    version,
                    name,
                    nonce,
                },
            ) => {
                self.check_hello(version, &name, known)?;
                let mac = self.mac(self.role, &name, &nonce).finalize().into_bytes();
                self.state = State::AwaitProof {
                    peer: name,
                    peer_nonce: nonce,
                };
                Ok(HandshakeStep::Send(Frame::Proof { mac: mac.into() }))
            }
            (State::AwaitProof { peer, peer_nonce }, Frame::Proof { mac }) => {
                let peer = peer.clone();
                self.mac(self.role.peer(), &peer, peer_nonce)
                    .verify_slice(&mac)
                    .map_err(|_| HandshakeError::BadProof)?;
                self.state = State::Done;
                Ok(HandshakeStep::Done { peer })
            }
            (State::Done | State::Failed, _) => Err(HandshakeError::Unexpected(
                "frame after the handshake ended",
            )),
            (_, frame) => Err(HandshakeError::Unexpected(frame.name())),
        }
    }

    fn check_hello(
        &self,
        version: u8,
        name: &NodeName,
        known: &dyn Fn(&NodeName) -> bool,
    ) -> Result<(), HandshakeError> {
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::BadVersion(version));
        }
        if *name == self.me {
            return Err(HandshakeError::SelfConnect);
        }
        if let Some(expected) = &self.dialed {
            if name != expected {
                return Err(HandshakeError::WrongNode {
                    expected: expected.clone(),
                    got: name.clone(),
                });
            }
        }
        if !known(name) {
            return Err(HandshakeError::UnknownNode(name.clone()));
        }
        if self.role == Role::Acceptor && !should_dial(name, &self.me) {
            return Err(HandshakeError::WrongDirection(name.clone()));
        }
        Ok(())
    }

    /// The MAC state for a proof sent by `sender`, on a connection whose
    /// other end is `peer` with `peer_nonce`.
    fn mac(&self, sender: Role, peer: &NodeName, peer_nonce: &[u8; NONCE_BYTES]) -> HmacSha256 {
        let (dialer, acceptor, dialer_nonce, acceptor_nonce) = match self.role {
            Role::Dialer => (&self.me, peer, &self.nonce, peer_nonce),
            Role::Acceptor => (peer, &self.me, peer_nonce, &self.nonce),
        };
        mac_state(
            &self.cookie,
            sender,
            dialer,
            acceptor,
            dialer_nonce,
            acceptor_nonce,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ids::parse_node_name;

    const COOKIE: &[u8] = b"0123456789abcdef";

    fn name(s: &str) -> NodeName {
        parse_node_name(s).unwrap()
    }

    fn any_known(_: &NodeName) -> bool {
        true
    }

    fn dialer(cookie: &[u8], nonce: u8) -> (Handshake, Frame) {
        Handshake::new(
            Role::Dialer,
            name("n1"),
            cookie.to_vec(),
            [nonce; NONCE_BYTES],
            Some(name("n2")),
        )
    }

    fn acceptor(cookie: &[u8], nonce: u8) -> (Handshake, Frame) {
        Handshake::new(
            Role::Acceptor,
            name("n2"),
            cookie.to_vec(),
            [nonce; NONCE_BYTES],
            None,
        )
    }

    fn proof_of(step: Result<HandshakeStep, HandshakeError>) -> Frame {
        match step {
            Ok(HandshakeStep::Send(f @ Frame::Proof { .. })) => f,
            other => panic!("expected a proof, got {other:?}"),
        }
    }

    /// Runs a whole handshake, both sides, and returns what each ended with.
    fn run(
        cookie_d: &[u8],
        cookie_a: &[u8],
    ) -> (
        Result<HandshakeStep, HandshakeError>,
        Result<HandshakeStep, HandshakeError>,
    ) {
        let (mut d, hello_d) = dialer(cookie_d, 1);
        let (mut a, hello_a) = acceptor(cookie_a, 2);
        let proof_d = proof_of(d.handle(hello_a, &any_known));
        let proof_a = proof_of(a.handle(hello_d, &any_known));
        (d.handle(proof_a, &any_known), a.handle(proof_d, &any_known))
    }

    #[test]
    fn both_sides_complete() {
        let (d, a) = run(COOKIE, COOKIE);
        assert_eq!(d, Ok(HandshakeStep::Done { peer: name("n2") }));
        assert_eq!(a, Ok(HandshakeStep::Done { peer: name("n1") }));
    }

    #[test]
    fn hello_carries_version_name_and_nonce() {
        let (h, hello) = dialer(COOKIE, 9);
        assert_eq!(
            hello,
            Frame::Hello {
                version: PROTOCOL_VERSION,
                name: name("n1"),
                nonce: [9; NONCE_BYTES],
            }
        );
        assert!(!h.is_done());
        assert!(!format!("{h:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn wrong_cookie_fails_on_both_sides() {
        let (d, a) = run(COOKIE, b"fedcba9876543210");
        assert_eq!(d, Err(HandshakeError::BadProof));
        assert_eq!(a, Err(HandshakeError::BadProof));
    }

    #[test]
    fn recorded_proof_fails_against_a_fresh_nonce() {
        // Record a complete handshake between n1 and n2.
        let (mut d, hello_d) = dialer(COOKIE, 1);
        let (_, hello_a) = acceptor(COOKIE, 2);
        let recorded_proof_d = proof_of(d.handle(hello_a, &any_known));
        // Replay the dialer's frames to n2, which picks a new nonce.
        let (mut a, _) = acceptor(COOKIE, 3);
        proof_of(a.handle(hello_d, &any_known));
        assert_eq!(
            a.handle(recorded_proof_d, &any_known),
            Err(HandshakeError::BadProof)
        );
        // And the acceptor's recorded proof, replayed to a dialer.
        let (_, hello_d) = dialer(COOKIE, 1);
        let (mut a, hello_a) = acceptor(COOKIE, 2);
        let recorded_proof_a = proof_of(a.handle(hello_d, &any_known));
        let (mut d, _) = dialer(COOKIE, 4);
        proof_of(d.handle(hello_a, &any_known));
        assert_eq!(
            d.handle(recorded_proof_a, &any_known),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn reflected_proof_fails() {
        // An attacker without the cookie accepts n1's connection, echoes
        // n1's nonce back under the name n2, and returns n1's own proof.
        let (mut d, hello_d) = dialer(COOKIE, 1);
        let Frame::Hello { nonce, .. } = hello_d else {
            unreachable!()
        };
        let fake_hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            name: name("n2"),
            nonce,
        };
        let own_proof = proof_of(d.handle(fake_hello, &any_known));
        assert_eq!(
            d.handle(own_proof, &any_known),
            Err(HandshakeError::BadProof)
        );
        // Same against an acceptor.
        let (mut a, hello_a) = acceptor(COOKIE, 2);
        let Frame::Hello { nonce, .. } = hello_a else {
            unreachable!()
        };
        let fake_hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            name: name("n1"),
            nonce,
        };
        let own_proof = proof_of(a.handle(fake_hello, &any_known));
        assert_eq!(
            a.handle(own_proof, &any_known),
            Err(HandshakeError::BadProof)
        );
    }

    fn hello(version: u8, from: &str) -> Frame {
        Frame::Hello {
            version,
            name: name(from),
            nonce: [5; NONCE_BYTES],
        }
    }

    #[test]
    fn hello_checks() {
        let only_n1_n2 = |n: &NodeName| n == "n1" || n == "n2";
        let (mut a, _) = acceptor(COOKIE, 2);
        assert_eq!(
            a.handle(hello(2, "n1"), &only_n1_n2),
            Err(HandshakeError::BadVersion(2))
        );
        let (mut a, _) = acceptor(COOKIE, 2);
        assert_eq!(
            a.handle(hello(PROTOCOL_VERSION, "n9"), &only_n1_n2),
            Err(HandshakeError::UnknownNode(name("n9")))
        );
        let (mut a, _) = acceptor(COOKIE, 2);
        assert_eq!(
            a.handle(hello(PROTOCOL_VERSION, "n2"), &only_n1_n2),
            Err(HandshakeError::SelfConnect)
        );
        let (mut d, _) = dialer(COOKIE, 1);
        assert_eq!(
            d.handle(hello(PROTOCOL_VERSION, "n3"), &any_known),
            Err(HandshakeError::WrongNode {
                expected: name("n2"),
                got: name("n3"),
            })
        );
        let (mut d, _) = dialer(COOKIE, 1);
        assert_eq!(
            d.handle(hello(PROTOCOL_VERSION, "n1"), &any_known),
            Err(HandshakeError::SelfConnect)
        );
        // n3 sorts above n2, so n2 dials n3, never the reverse.
        let (mut a, _) = acceptor(COOKIE, 2);
        assert_eq!(
            a.handle(hello(PROTOCOL_VERSION, "n3"), &any_known),
            Err(HandshakeError::WrongDirection(name("n3")))
        );
    }

    #[test]
    fn lower_name_dials() {
        assert!(should_dial(&name("n1"), &name("n2")));
        assert!(!should_dial(&name("n2"), &name("n1")));
        assert!(should_dial(&name("B"), &name("a")));
        assert!(should_dial(&name("n1"), &name("n10")));
        assert!(!should_dial(&name("n1"), &name("n1")));
    }

    #[test]
    fn out_of_order_frames_fail() {
        let ping = Frame::Ping { hlc: 1, seq: 1 };
        let proof = Frame::Proof {
            mac: [0; MAC_BYTES],
        };
        // Proof before Hello; a node frame before Hello.
        let (mut a, _) = acceptor(COOKIE, 2);
        assert_eq!(
            a.handle(proof.clone(), &any_known),
            Err(HandshakeError::Unexpected("Proof"))
        );
        let (mut a, _) = acceptor(COOKIE, 2);
        assert_eq!(
            a.handle(Frame::Cancel { req: 1 }, &any_known),
            Err(HandshakeError::Unexpected("Cancel"))
        );
        // A second Hello; a node frame before the Proof.
        let (mut a, _) = acceptor(COOKIE, 2);
        proof_of(a.handle(hello(PROTOCOL_VERSION, "n1"), &any_known));
        assert_eq!(
            a.handle(hello(PROTOCOL_VERSION, "n1"), &any_known),
            Err(HandshakeError::Unexpected("Hello"))
        );
        let (mut a, _) = acceptor(COOKIE, 2);
        proof_of(a.handle(hello(PROTOCOL_VERSION, "n1"), &any_known));
        assert_eq!(
            a.handle(ping.clone(), &any_known),
            Err(HandshakeError::Unexpected("Ping"))
        );
        // After a failure, everything fails.
        assert_eq!(
            a.handle(proof, &any_known),
            Err(HandshakeError::Unexpected(
                "frame after the handshake ended"
            ))
        );
        // After success too: the handshake is over.
        let (mut d, hello_d) = dialer(COOKIE, 1);
        let (mut a, hello_a) = acceptor(COOKIE, 2);
        let proof_d = proof_of(d.handle(hello_a, &any_known));
        proof_of(a.handle(hello_d.clone(), &any_known));
        assert!(matches!(
            a.handle(proof_d, &any_known),
            Ok(HandshakeStep::Done { .. })
        ));
        assert!(a.is_done());
        assert!(matches!(
            a.handle(hello_d, &any_known),
            Err(HandshakeError::Unexpected(_))
        ));
    }

    /// The test vector printed in docs/PROTOCOL.md.
    #[test]
    fn mac_matches_the_documented_vector() {
        let hex = |b: [u8; MAC_BYTES]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let d = proof_mac(
            COOKIE,
            Role::Dialer,
            &name("n1"),
            &name("n2"),
            &[1; NONCE_BYTES],
            &[2; NONCE_BYTES],
        );
        let a = proof_mac(
            COOKIE,
            Role::Acceptor,
            &name("n1"),
            &name("n2"),
            &[1; NONCE_BYTES],
            &[2; NONCE_BYTES],
        );
        assert_eq!(hex(d), DIALER_VECTOR);
        assert_eq!(hex(a), ACCEPTOR_VECTOR);
        // The state machines send exactly these.
        let (mut dh, hello_d) = dialer(COOKIE, 1);
        let (mut ah, hello_a) = acceptor(COOKIE, 2);
        assert_eq!(
            proof_of(dh.handle(hello_a, &any_known)),
            Frame::Proof { mac: d }
        );
        assert_eq!(
            proof_of(ah.handle(hello_d, &any_known)),
            Frame::Proof { mac: a }
        );
    }

    const DIALER_VECTOR: &str = "082b1523b046e88fbcecce7f732780861ee267b4d57e400472656a407981ce66";
    const ACCEPTOR_VECTOR: &str =
        "35fbcfa8c53cc84e767560b94eb7f1e5ba7492d22bb075dca745e2d7cff1a305";

    #[test]
    fn errors_read_well_in_a_log_line() {
        assert_eq!(
            HandshakeError::WrongNode {
                expected: name("n2"),
                got: name("n3")
            }
            .to_string(),
            "dialed \"n2\" but the peer calls itself \"n3\""
        );
        assert_eq!(
            HandshakeError::BadVersion(7).to_string(),
            "peer speaks protocol version 7, this node speaks 1"
        );
    }
}
