//! ProofSigner: the only holder of the backend's Ed25519 key (and of its X25519 form, the
//! onion key). It signs proof digests it computes itself, so the key can sign nothing but
//! proofs, and hands out only derived onion session keys.

use std::sync::Arc;

use actix::{Actor, Handler, Message, MessageResult, SyncArbiter, SyncContext};
use ed25519_dalek::{Signer, SigningKey};

use crate::clock::SharedClock;
use crate::domain::hashes::proof_hash;
use crate::domain::keys::{x25519_agree, x25519_secret_from_ed25519_seed};
use crate::handle::{Handle, HandleLimits};
use crate::health::ActorHealth;
use crate::onion::{self, Cipher};

/// The fields of a proof; the signer builds the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignProof {
    pub gen_index_hash: [u8; 32],
    pub rotating_pkey: [u8; 32],
    pub expiry_unix_ts_ms: u64,
}

impl Message for SignProof {
    type Result = [u8; 64];
}

/// The symmetric key of an onion request: X25519 agreement of the backend's onion key with
/// the client's ephemeral key, then the cipher's key derivation. Only the derived key leaves
/// the signer; `None` when the client's key is degenerate (all-zero shared secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionKey {
    pub client_pubkey: [u8; 32],
    pub cipher: Cipher,
}

impl Message for OnionKey {
    type Result = Option<[u8; 32]>;
}

pub struct ProofSigner {
    key: SigningKey,
    /// The backend key converted to X25519, for onion requests.
    onion_secret: [u8; 32],
    onion_public: [u8; 32],
    health: Arc<ActorHealth>,
    clock: SharedClock,
}

impl Handler<OnionKey> for ProofSigner {
    type Result = Option<[u8; 32]>;

    fn handle(&mut self, msg: OnionKey, _: &mut Self::Context) -> Self::Result {
        let shared = x25519_agree(&self.onion_secret, &msg.client_pubkey);
        self.health.record_success(self.clock.now_ms());
        // A low-order client key yields the all-zero secret: refuse it, as libsodium does.
        if shared == [0; 32] {
            return None;
        }
        Some(onion::derive_key(msg.cipher, &shared, &msg.client_pubkey, &self.onion_public))
    }
}

impl Actor for ProofSigner {
    type Context = SyncContext<Self>;
}

impl Handler<SignProof> for ProofSigner {
    type Result = MessageResult<SignProof>;

    fn handle(&mut self, msg: SignProof, _: &mut Self::Context) -> Self::Result {
        let digest = proof_hash(0, &msg.gen_index_hash, &msg.rotating_pkey, msg.expiry_unix_ts_ms);
        self.health.record_success(self.clock.now_ms());
        MessageResult(self.key.sign(&digest).to_bytes())
    }
}

pub type SignerHandle = Handle<ProofSigner>;

/// Public halves of the backend key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPublicKeys {
    pub ed25519: [u8; 32],
    pub x25519: [u8; 32],
}

/// Starts `threads` signers sharing the key; returns the handle and the public keys.
pub fn start(
    seed: [u8; 32],
    threads: usize,
    clock: SharedClock,
    limits: HandleLimits,
) -> (SignerHandle, BackendPublicKeys) {
    let key = SigningKey::from_bytes(&seed);
    let onion_secret = x25519_secret_from_ed25519_seed(&seed);
    let onion_public = x25519_dalek::x25519(onion_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let public = BackendPublicKeys { ed25519: key.verifying_key().to_bytes(), x25519: onion_public };
    let health = ActorHealth::new("proof_signer");
    let h = health.clone();
    let addr = SyncArbiter::start(threads.max(1), move || ProofSigner {
        key: key.clone(),
        onion_secret,
        onion_public,
        health: h.clone(),
        clock: clock.clone(),
    });
    (Handle::new(addr, health, limits), public)
}
