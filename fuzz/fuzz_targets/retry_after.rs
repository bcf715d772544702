//! `dialect::rfc::retry_after`: a `Retry-After` header (delta-seconds or an
//! HTTP-date), and the backoff the cache derives from it.
#![no_main]

use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tower_token::dialect::rfc;
use tower_token_fuzz::{check_error, check_retry_after, credentials};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, value.clone());
    let after = rfc::retry_after(&headers);
    let seconds = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(seconds) = seconds {
        assert_eq!(after, Some(Duration::from_secs(seconds)));
    }
    check_retry_after(after);
    // On a 503 token answer, the error keeps it.
    let mut response = http::Response::new(bytes::Bytes::from_static(b"busy"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    *response.headers_mut() = headers;
    match rfc::parse_token_response(&response, &credentials()) {
        Ok(_) => panic!("a 503 gave a token"),
        Err(error) => {
            if seconds.is_some() {
                assert_eq!(error.retry_after(), after);
            }
            assert!(error.is_retriable());
            check_error(&error, &[]);
        }
    }
});
