//! `challenge::bearer_error`: the `error` of a `WWW-Authenticate` header's
//! Bearer challenge.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::challenge::bearer_error;

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    let found = bearer_error(&header);
    // Without a Bearer challenge there is no Bearer error.
    if !header.to_ascii_lowercase().contains("bearer") {
        assert_eq!(found, None);
    }
    // Any text, quoted after other challenges and parameters, reads back.
    let quoted: String = header
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let built = format!(r#"Basic realm="r", Bearer realm="a, b", error="{quoted}", scope="s""#);
    assert_eq!(bearer_error(&built).as_deref(), Some(&*header), "{built}");
    // As a header value, as the layer sees it.
    if let Ok(value) = http::HeaderValue::from_bytes(data)
        && let Ok(text) = value.to_str()
    {
        assert_eq!(bearer_error(text), found);
    }
});
