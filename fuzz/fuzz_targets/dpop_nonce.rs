//! The `DPoP-Nonce` header of an answer (RFC 9449 §8, §9) and the
//! `WWW-Authenticate: DPoP` challenge around it.
//!
//! Invariants: no panic; a nonce that is remembered is the header's value,
//! made only of the characters RFC 9449 allows (`%x21 / %x23-5B / %x5D-7E`),
//! and goes into a proof that is a valid header value; the remembered
//! nonce belongs to the answer's origin alone.
#![no_main]

use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tower_token::challenge::dpop_error;
use tower_token::dpop::Dpop;
use tower_token::jose::Algorithm;

fn dpop() -> &'static Dpop {
    static DPOP: OnceLock<Dpop> = OnceLock::new();
    DPOP.get_or_init(|| Dpop::generate(Algorithm::EdDSA).expect("a key"))
}

fuzz_target!(|data: &[u8]| {
    // The challenge parser, on any text.
    let text = String::from_utf8_lossy(data);
    let _ = dpop_error(&text);

    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("dpop-nonce", value.clone());
    // A fresh origin per input would leak memory over millions of runs:
    // one origin, overwritten, and another that must stay untouched.
    let api: Uri = "https://api.example.com/v1/orders?id=1"
        .parse()
        .expect("uri");
    let other: Uri = "https://other.example.com/".parse().expect("uri");
    let dpop = dpop();
    let before_other = dpop.nonce(&other);
    if dpop.remember_nonce(&api, &headers) {
        let nonce = dpop.nonce(&api).expect("a remembered nonce reads back");
        assert_eq!(nonce.as_bytes(), value.as_bytes());
        assert!(!nonce.is_empty());
        assert!(
            nonce
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)),
            "{nonce:?}"
        );
        let proof = dpop
            .proof(&Method::GET, &api, Some("token"))
            .expect("a proof with the nonce");
        assert!(proof.to_str().is_ok());
    }
    assert_eq!(dpop.nonce(&other), before_other);
});
