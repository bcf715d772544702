//! `dialect::rfc::parse_token_response`: an RFC 6749 token answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::dialect::rfc;
use tower_token_fuzz::{answer, check_error, check_token, credentials};

fuzz_target!(|data: &[u8]| {
    let response = answer(data);
    match rfc::parse_token_response(&response, &credentials()) {
        Ok(token) => {
            assert!(response.status().is_success(), "{}", response.status());
            check_token(&token);
        }
        Err(error) => check_error(&error, &[]),
    }
});
