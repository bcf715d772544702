//! `dialect::kopokopo::parse_token_response`: a Kopo Kopo token answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::dialect::kopokopo;
use tower_token_fuzz::{answer, check_error, check_token, credentials};

fuzz_target!(|data: &[u8]| {
    let response = answer(data);
    match kopokopo::parse_token_response(&response, &credentials()) {
        Ok(token) => {
            assert!(response.status().is_success(), "{}", response.status());
            // A lifetime always, and never a refresh token.
            assert!(token.expires_in().is_some());
            assert!(token.refresh_token().is_none());
            check_token(&token);
        }
        Err(error) => check_error(&error, &[]),
    }
});
