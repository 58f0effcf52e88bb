//! ProofSigner: the only holder of the backend's Ed25519 key. It signs proof digests it
//! computes itself, so the key can sign nothing but proofs.

use std::sync::Arc;

use actix::{Actor, Handler, Message, MessageResult, SyncArbiter, SyncContext};
use ed25519_dalek::{Signer, SigningKey};

use crate::clock::SharedClock;
use crate::domain::hashes::proof_hash;
use crate::handle::{Handle, HandleLimits};
use crate::health::ActorHealth;

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

pub struct ProofSigner {
    key: SigningKey,
    health: Arc<ActorHealth>,
    clock: SharedClock,
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

/// Starts `threads` signers sharing the key; returns the handle and the public key.
pub fn start(seed: [u8; 32], threads: usize, clock: SharedClock, limits: HandleLimits) -> (SignerHandle, [u8; 32]) {
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    let health = ActorHealth::new("proof_signer");
    let h = health.clone();
    let addr = SyncArbiter::start(threads.max(1), move || ProofSigner {
        key: key.clone(),
        health: h.clone(),
        clock: clock.clone(),
    });
    (Handle::new(addr, health, limits), public)
}
