//! `dialect::onelogin::parse_token_response`: a OneLogin token answer, flat
//! or in its `status`/`data` envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::dialect::onelogin;
use tower_token_fuzz::{answer, check_error, check_token, credentials};

fuzz_target!(|data: &[u8]| {
    let response = answer(data);
    match onelogin::parse_token_response(&response, &credentials()) {
        Ok(token) => {
            assert!(response.status().is_success(), "{}", response.status());
            // A lifetime always: the answer's, or OneLogin's ten hours.
            assert!(token.expires_in().is_some());
            check_token(&token);
        }
        Err(error) => check_error(&error, &[]),
    }
});
