//! Checks against a live localgem server, beyond what the examples show: the Files API
//! round trip (a multi-chunk resumable upload, get, list, delete), get/delete/cancel of
//! interactions, error envelopes, and stateless history rebuilt from a stream.
//!
//! Runs only when `LOCALGEM_CLIENT_LIVE_URL` names a running server (`tests/client/run.sh`
//! sets it); otherwise it returns at once.

use futures::TryStreamExt;
use localgem_client::{
    input, AnyStep, Client, ClientBuilder, Error, InteractionRequest, Status, UploadConfig,
};

fn live_client() -> Option<Client> {
    let url = std::env::var("LOCALGEM_CLIENT_LIVE_URL").ok()?;
    Some(
        ClientBuilder::new()
            .api_key("client-live-key")
            .base_url(url)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn live_server() {
    let Some(client) = live_client() else {
        eprintln!("LOCALGEM_CLIENT_LIVE_URL is not set: skipped");
        return;
    };
    files(&client).await;
    interactions(&client).await;
    stateless_from_stream(&client).await;
}

async fn files(client: &Client) {
    let files = client.files();
    // Larger than one 8 MiB chunk, so that the upload takes two requests.
    let total = 8 * 1024 * 1024 + 1000;
    let bytes: Vec<u8> = (0..total).map(|i| b"localgem\n"[i % 9]).collect();
    let progress = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let p = progress.clone();
    let file = files
        .upload_bytes(
            bytes,
            UploadConfig::new()
                .display_name("notes.txt")
                .on_progress(move |sent, total| p.lock().unwrap().push((sent, total))),
        )
        .await
        .expect("upload");
    let total = total as u64;
    assert_eq!(
        *progress.lock().unwrap(),
        [(8 * 1024 * 1024, total), (total, total)]
    );
    assert_eq!(file.mime_type, "text/plain");
    assert_eq!(file.size_bytes, total.to_string());
    assert_eq!(file.display_name.as_deref(), Some("notes.txt"));
    assert_eq!(file.state, "ACTIVE");

    let small = files
        .upload_bytes(
            &b"%PDF-1.4 not really"[..],
            UploadConfig::new().mime_type("application/pdf"),
        )
        .await
        .expect("upload");

    assert_eq!(files.get(&file.name).await.unwrap().name, file.name);
    assert_eq!(files.get(&file.uri).await.unwrap().name, file.name);
    let listed: Vec<String> = files
        .list_with_page_size(Some(1))
        .map_ok(|f| f.name)
        .try_collect()
        .await
        .unwrap();
    assert!(
        listed.contains(&file.name) && listed.contains(&small.name),
        "{listed:?}"
    );

    files.delete(&file.name).await.unwrap();
    files.delete(&small.name).await.unwrap();
    let err = files.get(&file.name).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}

async fn interactions(client: &Client) {
    let api = client.interactions();
    let it = api
        .create(InteractionRequest::new("gemini-3-flash-preview", "Say hi.").max_output_tokens(16))
        .await
        .unwrap();
    assert!(!it.id.is_empty());
    assert!(it.status == Status::Completed || it.status == Status::Incomplete);
    assert!(!it.output_text().is_empty());

    let got = api.get(&it.id).await.unwrap();
    assert_eq!(got.id, it.id);
    assert_eq!(got.steps[0].step_type(), Some("user_input"));
    assert_eq!(got.output_text(), it.output_text());

    // Cancelling a finished interaction: unchanged, or a 400.
    match api.cancel(&it.id).await {
        Ok(c) => assert_eq!(c.id, it.id),
        Err(e) => assert_eq!(e.status(), Some(400), "{e:?}"),
    }

    api.delete(&it.id).await.unwrap();
    let err = api.get(&it.id).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    match err {
        Error::Api { code, message, .. } => {
            assert_eq!(code.as_deref(), Some("not_found"));
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }

    // An unknown step type in the input is the server's 400, with its message.
    let bad = serde_json::json!([{"type": "hologram_input", "frames": 3}]);
    let err = api
        .create(InteractionRequest::new("gemini-3-flash-preview", bad))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
}

async fn stateless_from_stream(client: &Client) {
    let api = client.interactions();
    let mut history: Vec<AnyStep> = vec![input::user_text("My name is Ada.").into()];
    let first = api
        .create_stream(
            InteractionRequest::new("gemini-3-flash-preview", &history)
                .store(false)
                .max_output_tokens(24),
        )
        .await
        .unwrap()
        .into_interaction()
        .await
        .unwrap();
    assert_eq!(first.id, "", "store=false gives an empty id");
    assert!(!first.output_text().is_empty());
    history.extend(first.steps);
    history.push(input::user_text("What is my name?").into());
    let second = api
        .create(
            InteractionRequest::new("gemini-3-flash-preview", &history)
                .store(false)
                .max_output_tokens(24),
        )
        .await
        .unwrap();
    assert!(!second.output_text().is_empty());
}
