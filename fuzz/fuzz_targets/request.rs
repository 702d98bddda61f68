//! Any bytes as a create request body: parsing and validation either accept them or give a
//! 4xx, and never panic; what validates renders to chat messages or a 400.
#![no_main]

use libfuzzer_sys::fuzz_target;
use localgem_api::signature::Signer;
use localgem_api::validate::{to_messages, validate_create, SamplingDefaults};
use localgem_wire::CreateInteractionRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<CreateInteractionRequest>(data) else {
        return;
    };
    match validate_create(req, SamplingDefaults::default()) {
        Ok(valid) => {
            if let Err(e) = to_messages(valid.system_instruction.as_deref(), &valid.input, &Signer::new(b"k".to_vec()), Vec::new()) {
                assert!(e.status.is_client_error(), "{e:?}");
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e:?}"),
    }
});
