//! Any bytes as a generateContent body: parsing (trailing commas allowed), conversion to the
//! validated request (history, tools and schemas, generation config) and rendering to chat
//! messages either succeed or give a 4xx, and never panic.
#![no_main]

use axum::body::Bytes;
use libfuzzer_sys::fuzz_target;
use localgem_api::classic::{parse, request::convert};
use localgem_api::signature::Signer;
use localgem_api::validate::{to_messages, SamplingDefaults};
use localgem_wire::classic::GenerateContentRequest;

fuzz_target!(|data: &[u8]| {
    let req = match parse::<GenerateContentRequest>(&Bytes::copy_from_slice(data)) {
        Ok(req) => req,
        Err(e) => {
            assert!(e.status.is_client_error(), "{e:?}");
            return;
        }
    };
    match convert(req, "gemini-2.5-flash", false, SamplingDefaults::default()) {
        Ok(valid) => {
            if let Err(e) = to_messages(
                valid.system_instruction.as_deref(),
                &valid.input,
                &Signer::new(b"k".to_vec()),
                Vec::new(),
            ) {
                assert!(e.status.is_client_error(), "{e:?}");
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e:?}"),
    }
});
