//! `dialect::{rfc, kopokopo, korap}::parse_revoke_response`: an RFC 7009
//! revocation answer. Kopo Kopo and KorAP read it as RFC 7009 does; the
//! target checks the three agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::dialect::{kopokopo, korap, rfc};
use tower_token_fuzz::{SECRET, TOKEN, answer, basic, check_error};

fuzz_target!(|data: &[u8]| {
    let response = answer(data);
    let (basic_form, basic_raw) = (basic(true), basic(false));
    // What the revocation service redacts: the client's secrets and the token.
    let secrets = [SECRET, basic_form.as_str(), basic_raw.as_str(), TOKEN];
    let outcome = rfc::parse_revoke_response(&response, &secrets);
    match &outcome {
        Ok(()) => assert!(response.status().is_success(), "{}", response.status()),
        Err(error) => check_error(error, &[TOKEN]),
    }
    // The same error, but for a `Retry-After` date, read against the clock
    // a moment apart.
    let shown = |r: &Result<(), tower_token::Error>| {
        r.as_ref()
            .map_err(|e| (e.to_string(), e.status(), e.retry_after().is_some()))
            .err()
    };
    for other in [
        kopokopo::parse_revoke_response(&response, &secrets),
        korap::parse_revoke_response(&response, &secrets),
    ] {
        assert_eq!(shown(&other), shown(&outcome));
    }
});
