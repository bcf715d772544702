//! `discovery::parse_metadata`: an RFC 8414 / OpenID discovery document, and
//! what is built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::Credentials;
use tower_token::discovery::{metadata_request, metadata_urls, parse_metadata};
use tower_token_fuzz::{CLIENT_ID, answer, check_error_shape, credentials};

fuzz_target!(|data: &[u8]| {
    let response = answer(data);
    match parse_metadata(&response) {
        Ok(metadata) => {
            assert!(response.status().is_success(), "{}", response.status());
            let _ = (metadata.token_auth(), metadata.revocation_auth());
            if let Ok(builder) = metadata.client_credentials(credentials()) {
                let _ = builder.build();
            }
            for creds in [credentials(), Credentials::public(CLIENT_ID)] {
                if let Ok(builder) = metadata.revoke_service(creds) {
                    let _ = builder.build();
                }
            }
            if let Ok(issuer) = url::Url::parse(&metadata.issuer) {
                let urls = metadata_urls(&issuer);
                assert!((1..=4).contains(&urls.len()), "{urls:?}");
                for url in &urls {
                    assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
                    let _ = metadata_request(url);
                }
            }
        }
        // A discovery request carries no credentials: nothing to redact.
        Err(error) => check_error_shape(&error),
    }
});
