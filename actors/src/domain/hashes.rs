//! The BLAKE2b-256 digests that clients sign and that the backend signs, byte for byte as
//! upstream lays them out: fixed-width little-endian integers, raw keys, raw UTF-8 strings
//! without separators, and a 16-byte personalisation per purpose.

use blake2::Blake2bMac;
use blake2::digest::Mac;
use blake2::digest::consts::U32;
use sha2::{Digest, Sha256};

use super::types::{PaymentProvider, PaymentTx, PubKeyBytes};

pub type Hash32 = [u8; 32];

pub const PERSONAL_ADD_PAYMENT: &[u8; 16] = b"ProAddPayment___";
pub const PERSONAL_GENERATE_PROOF: &[u8; 16] = b"ProGenerateProof";
pub const PERSONAL_GET_DETAILS: &[u8; 16] = b"ProGetProDetReq_";
pub const PERSONAL_SET_REFUND: &[u8; 16] = b"ProSetRefundReq_";
pub const PERSONAL_PROOF: &[u8; 16] = b"ProProof________";

/// BLAKE2b with a 32-byte digest, no key, the given salt and personalisation.
fn blake2b32(salt: &[u8], personal: &[u8], parts: &[&[u8]]) -> Hash32 {
    // Salt and personalisation are at most 16 bytes by construction in this module.
    let mut mac = Blake2bMac::<U32>::new_with_salt_and_personal(None, salt, personal)
        .expect("salt and personalisation are at most 16 bytes");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Provider byte followed by the provider's identifiers, as the add-payment and
/// refund-request digests append them.
fn payment_tx_parts(tx: &PaymentTx) -> Vec<&[u8]> {
    match tx.provider() {
        PaymentProvider::Google => vec![tx.google_payment_token.as_bytes(), tx.google_order_id.as_bytes()],
        PaymentProvider::Apple => vec![tx.apple_tx_id.as_bytes()],
        PaymentProvider::Rangeproof => vec![tx.rangeproof_order_id.as_bytes()],
        PaymentProvider::Nil => vec![],
    }
}

pub fn add_pro_payment_hash(version: u8, master: &PubKeyBytes, rotating: &PubKeyBytes, tx: &PaymentTx) -> Hash32 {
    let v = [version];
    let provider = [tx.provider().as_i64() as u8];
    let mut parts: Vec<&[u8]> = vec![&v, master, rotating, &provider];
    parts.extend(payment_tx_parts(tx));
    blake2b32(&[], PERSONAL_ADD_PAYMENT, &parts)
}

pub fn generate_pro_proof_hash(version: u8, master: &PubKeyBytes, rotating: &PubKeyBytes, unix_ts_ms: u64) -> Hash32 {
    blake2b32(&[], PERSONAL_GENERATE_PROOF, &[&[version], master, rotating, &unix_ts_ms.to_le_bytes()])
}

pub fn get_pro_details_hash(version: u8, master: &PubKeyBytes, unix_ts_ms: u64, count: u32) -> Hash32 {
    blake2b32(&[], PERSONAL_GET_DETAILS, &[&[version], master, &unix_ts_ms.to_le_bytes(), &count.to_le_bytes()])
}

pub fn set_refund_requested_hash(
    version: u8,
    master: &PubKeyBytes,
    unix_ts_ms: u64,
    refund_requested_unix_ts_ms: u64,
    tx: &PaymentTx,
) -> Hash32 {
    let v = [version];
    let ts = unix_ts_ms.to_le_bytes();
    let refund = refund_requested_unix_ts_ms.to_le_bytes();
    let provider = [tx.provider().as_i64() as u8];
    let mut parts: Vec<&[u8]> = vec![&v, master, &ts, &refund, &provider];
    parts.extend(payment_tx_parts(tx));
    blake2b32(&[], PERSONAL_SET_REFUND, &parts)
}

/// The digest the backend signs to issue a proof.
pub fn proof_hash(version: u8, gen_index_hash: &Hash32, rotating: &PubKeyBytes, expiry_unix_ts_ms: u64) -> Hash32 {
    blake2b32(&[], PERSONAL_PROOF, &[&[version], gen_index_hash, rotating, &expiry_unix_ts_ms.to_le_bytes()])
}

/// Opaque generation id: the counter hashed with the database's secret salt, empty
/// personalisation.
pub fn gen_index_hash(gen_index: u64, salt: &[u8; 16]) -> Hash32 {
    blake2b32(salt, &[], &[&gen_index.to_le_bytes()])
}

/// What Google purchases must carry as obfuscated external account id (as raw bytes; clients
/// send its hex).
pub fn google_obfuscated_account_id(master: &PubKeyBytes) -> [u8; 32] {
    Sha256::digest(master).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn k(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    const MASTER: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    const ROTATING: &str = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";

    // api.md §9.1
    #[test]
    fn api_request_digests() {
        let (m, r) = (k(MASTER), k(ROTATING));
        let g = PaymentTx::google("token-abc", "GPA.1234-5678");
        assert_eq!(
            hex::encode(add_pro_payment_hash(0, &m, &r, &g)),
            "466e621a6e5b5e443c5931d49efcb6d2225eed4e1171bf06524f9b2a17d6e81c"
        );
        let a = PaymentTx::apple_tx("2000000123456789");
        assert_eq!(
            hex::encode(add_pro_payment_hash(0, &m, &r, &a)),
            "5d6a1a1ebfc6ae36e28f4906176946fdeff93c6099e65b0497c1d7a5e7d27f9f"
        );
        let t = 1762407212143u64;
        assert_eq!(
            hex::encode(generate_pro_proof_hash(0, &m, &r, t)),
            "294971d5005d69c1f9dc445a2e86c8e2191b2b3b8c19e88840e7c31c0688c956"
        );
        assert_eq!(
            hex::encode(get_pro_details_hash(0, &m, t, 10)),
            "01ff18f301ca555451acb697d92d22b470110b235c2b57edf1908c92370c39ef"
        );
        assert_eq!(
            hex::encode(set_refund_requested_hash(0, &m, t, t + 1000, &a)),
            "f2f2b68064cb9243235f25baef2617650a7e2155217df820de71a99a7397cf66"
        );
    }

    // api.md §9.2 and backend.md §21.1
    #[test]
    fn gen_index_hashes() {
        let salt = [0x11u8; 16];
        assert_eq!(
            hex::encode(gen_index_hash(0, &salt)),
            "6e9e59b1aed7bd139c5c4435e09a0d3d0fa3f1c6c4d71cfeb4a6e742f0c577a4"
        );
        assert_eq!(
            hex::encode(gen_index_hash(1, &salt)),
            "404d9f58db1aa40dc4fa1a11e15a9b6e6e5ca647e5f17ef0eee0372429bab2b9"
        );
        assert_eq!(
            hex::encode(gen_index_hash(2, &salt)),
            "cff04073946c1bd8db5fa10dcd64abda824e63ddc04a88fe0dd490794b69d184"
        );
        let salt2: [u8; 16] = h("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        for (i, want) in [
            (0u64, "f40404fc3f415f70de6adf9e3f0347684fb43697fcb13539b70c2315d3e00d81"),
            (1, "cf83a8629f1c54cb3c4f777ef161546dba932d88446afefc82627b65bf1eadf9"),
            (2, "5d13985a438b014a5d3d2f0e100382d814e61e6131f98de5e6e2fca2fa3cc370"),
            (7, "997966863d941d6ec7b1bf3d21ae470672ab226531f1594c410b0f62f83ba9c6"),
            (255, "abd013852d6b2bffb8fea2961096831d5e91fdc8a9a20893b2704f30e2d75a13"),
            (256, "58964e8cfee610183cd610870e97b98ada9b259af1e043e41da450563b15ba51"),
            (4294967296, "c308ce6588bc87b8ea92190e0164268f60befaceabc33e3d0b0354d34d5c8414"),
        ] {
            assert_eq!(hex::encode(gen_index_hash(i, &salt2)), want, "gen_index {i}");
        }
    }

    #[test]
    fn proof_digest() {
        let gih = gen_index_hash(0, &[0x11; 16]);
        assert_eq!(
            hex::encode(proof_hash(0, &gih, &k(ROTATING), 1765065600000)),
            "aa26cb7c062292d334f0938f88e0228832f48296c48e7efe282f3d7b8fcb8ded"
        );
    }

    // client-compat.md §10.2 (a different key set, Google refund form included)
    #[test]
    fn client_compat_digests() {
        let m = k("b6d20c075eddd2edb69d4d7da9b7e580f187ce0537585da2b5e454b77980d0c8");
        let r = k("3497f081e4e9bb24053d45b25455b6f4b117f3b7329c4aba05aefc51b5cab110");
        let ts = 1754971101000u64;
        let g = PaymentTx::google("DEV.aabbccddeeff0011", "DEV.0011223344556677");
        assert_eq!(
            hex::encode(add_pro_payment_hash(0, &m, &r, &g)),
            "4c2bceac77ce4a963a2bb596590970b39b9841e8ab212e7b00c50ede5d3c3e77"
        );
        assert_eq!(
            hex::encode(add_pro_payment_hash(0, &m, &r, &PaymentTx::apple_tx("2000000123456789"))),
            "4ac16eef2e007bf944802ac63f48d62cb56089ac29cbe8bb863d249dcaf96a08"
        );
        assert_eq!(
            hex::encode(generate_pro_proof_hash(0, &m, &r, ts)),
            "d98a13f8063b4597e8a8a09c135a5df731a7d808e81e8bd5946f13db170d4e1c"
        );
        assert_eq!(
            hex::encode(get_pro_details_hash(0, &m, ts, 10000)),
            "f63ac629787d7f4945107e4012e530fa97a89957da2e6d186c4ffe03f127e0be"
        );
        assert_eq!(
            hex::encode(set_refund_requested_hash(0, &m, ts, ts, &g)),
            "a4d43a02751f460d134d4cbcefc5886c21662e263c45f1f1fc113fdb0f7fef4f"
        );
        assert_eq!(
            hex::encode(proof_hash(0, &[0x11; 32], &r, 1757548800000)),
            "a993d5e17f24941c549f813fcb292ab322e512af06e44f7a3b922728e4dfd5bb"
        );
    }

    #[test]
    fn obfuscated_account_id() {
        assert_eq!(
            hex::encode(google_obfuscated_account_id(&k(MASTER))),
            "34750f98bd59fcfc946da45aaabe933be154a4b5094e1c4abf42866505f3c97e"
        );
    }
}
