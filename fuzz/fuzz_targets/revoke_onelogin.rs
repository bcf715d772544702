//! `dialect::onelogin::parse_revoke_response`: a OneLogin revocation answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::dialect::onelogin;
use tower_token_fuzz::{SECRET, TOKEN, answer, basic, check_error};

fuzz_target!(|data: &[u8]| {
    let response = answer(data);
    let (basic_form, basic_raw) = (basic(true), basic(false));
    // What the revocation service redacts: the client's secrets and the token.
    let secrets = [SECRET, basic_form.as_str(), basic_raw.as_str(), TOKEN];
    match onelogin::parse_revoke_response(&response, &secrets) {
        Ok(()) => assert!(response.status().is_success(), "{}", response.status()),
        Err(error) => check_error(&error, &[TOKEN]),
    }
});
