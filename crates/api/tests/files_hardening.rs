//! What a hostile key or an unlucky connection can do to the Files API: names taken by
//! another key or by a racing upload, chunks cut short, refused chunks, damaged bytes on
//! disk, and a second server starting on the same data dir.

mod common;

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{app, App};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn id_of(file: &Value) -> String {
    file["name"]
        .as_str()
        .unwrap()
        .strip_prefix("files/")
        .unwrap()
        .to_owned()
}

/// Upload `data` as key `key` under the custom name `files/{name}`.
async fn upload_named(a: &App, key: &str, name: &str, data: &[u8]) -> common::Reply {
    let url = a
        .start(
            key,
            data.len(),
            json!({"file": {"name": format!("files/{name}"), "mime_type": "text/plain"}}),
        )
        .await;
    a.chunk(&url, 0, data, true).await
}

/// An upload start whatever it answers.
async fn start_raw(a: &App, key: &str, meta: Value) -> common::Reply {
    a.send(
        "POST",
        "/upload/v1beta/files",
        &[
            ("x-goog-api-key", key),
            ("x-goog-upload-protocol", "resumable"),
            ("x-goog-upload-command", "start"),
        ],
        meta.to_string().into_bytes(),
    )
    .await
}

/// What the fake engine saw of a document the key sends (its text is the prompt).
async fn read_through_prompt(a: &App, key: &str, id: &str) -> common::Reply {
    a.interact(
        key,
        &json!({"model": "fake-model", "input": [
            {"type": "text", "text": "read"},
            {"type": "document", "uri": format!("files/{id}"), "mime_type": "text/plain"}]}),
    )
    .await
}

fn last_prompt(a: &App) -> String {
    let reqs = a.fake.requests.lock().unwrap();
    reqs.last()
        .unwrap()
        .messages
        .last()
        .unwrap()
        .content
        .clone()
}

#[tokio::test]
async fn another_key_cannot_touch_a_file_by_taking_its_name() {
    let a = app(1 << 20);
    let r = upload_named(&a, "alice", "report", b"alice's numbers").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Bob uses the same name: his own file, not a refusal that tells him hers exists.
    let r = upload_named(&a, "bob", "report", b"bob's words").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["file"]["name"], "files/report");
    // Each reads their own bytes.
    let r = read_through_prompt(&a, "alice", "report").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(last_prompt(&a).contains("alice's numbers"));
    let r = read_through_prompt(&a, "bob", "report").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(last_prompt(&a).contains("bob's words"));
    // Bob deleting his leaves hers.
    let r = a.keyed("DELETE", "/v1beta/files/report", "bob").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = read_through_prompt(&a, "alice", "report").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(last_prompt(&a).contains("alice's numbers"));
    // A second upload of hers under the taken name is refused and leaves the first intact.
    let r = start_raw(&a, "alice", json!({"file": {"name": "files/report"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["error"]["status"], "ALREADY_EXISTS");
    let r = read_through_prompt(&a, "alice", "report").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(last_prompt(&a).contains("alice's numbers"));
    assert_eq!(a.blobs().len(), 1, "{:?}", a.blobs());
}

#[tokio::test]
async fn two_uploads_racing_for_one_name_cannot_hurt_each_other() {
    let a = app(1 << 20);
    let meta = json!({"file": {"name": "files/race", "mime_type": "text/plain"}});
    let first = a.start("k", 5, meta.clone()).await;
    // The name is reserved at start: the second start is refused at once.
    let r = start_raw(&a, "k", meta).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = a.chunk(&first, 0, b"first", true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = read_through_prompt(&a, "k", "race").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(last_prompt(&a).contains("first"));
    // A cancelled upload gives its name back.
    let meta2 = json!({"file": {"name": "files/again"}});
    let url = a.start("k", 3, meta2.clone()).await;
    let r = a
        .send("POST", &url, &[("x-goog-upload-command", "cancel")], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let url = a.start("k", 3, meta2).await;
    assert_eq!(a.chunk(&url, 0, b"abc", true).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_refused_chunk_says_the_upload_goes_on() {
    let a = app(1 << 20);
    let url = a.start("k", 10, json!({})).await;
    assert_eq!(
        a.chunk(&url, 0, b"abcd", false).await.status,
        StatusCode::OK
    );
    let r = a.chunk(&url, 7, b"xyz", false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.headers["x-goog-upload-status"], "active");
    assert_eq!(r.headers["x-goog-upload-size-received"], "4");
    let r = a
        .send("POST", &url, &[("x-goog-upload-command", "bogus")], vec![])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.headers["x-goog-upload-status"], "active");
    let r = a.chunk(&url, 4, b"efghij", true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["x-goog-upload-status"], "final");
    // An upload that is over says final.
    let r = a.chunk(&url, 10, b"k", true).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers["x-goog-upload-status"], "final");
}

/// A chunk whose connection breaks after `sent` bytes.
async fn broken_chunk(a: &App, url: &str, offset: usize, sent: &[u8]) -> (StatusCode, String) {
    let first = axum::body::Bytes::copy_from_slice(sent);
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(first),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )),
    ]);
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("host", "files.test:8080")
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", offset.to_string())
        .body(Body::from_stream(stream))
        .unwrap();
    let resp = localgem_api::router(a.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let upload_status = resp
        .headers()
        .get("x-goog-upload-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let _ = resp.into_body().collect().await;
    (status, upload_status)
}

#[tokio::test]
async fn an_interrupted_chunk_keeps_what_arrived_and_the_upload_resumes() {
    let a = app(1 << 20);
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let url = a.start("k", data.len(), json!({})).await;
    let (status, upload_status) = broken_chunk(&a, &url, 0, &data[..1200]).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(upload_status, "active");
    // query says how much is kept
    let r = a
        .send("POST", &url, &[("x-goog-upload-command", "query")], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-goog-upload-status"], "active");
    assert_eq!(r.headers["x-goog-upload-size-received"], "1200");
    // and the client goes on from there
    let r = a.chunk(&url, 1200, &data[1200..], true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let id = id_of(&r.body["file"]);
    assert_eq!(std::fs::read(a.blob("k", &id).await).unwrap(), data);
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(&data));
    let tenant = localgem_api::tenant::Tenant::from_key("k").0;
    use localgem_core::Store;
    let rec = a.store.get_file(&tenant, &id).await.unwrap().unwrap();
    assert_eq!(rec.sha256_hex, hex);
}

#[tokio::test]
async fn a_damaged_stored_file_is_refused_not_used() {
    let a = app(1 << 20);
    let text = b"The meeting is on Tuesday at noon in room 4.";
    let f = a.upload("k", text, "notes").await;
    let id = id_of(&f);
    let blob = a.blob("k", &id).await;
    assert_eq!(
        read_through_prompt(&a, "k", &id).await.status,
        StatusCode::OK
    );
    // Same size, one byte changed.
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[4] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let r = read_through_prompt(&a, "k", &id).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("damaged") && msg.contains("SHA-256"), "{msg}");
    // Truncated to nothing, as a power cut can leave it.
    std::fs::write(&blob, b"").unwrap();
    let r = read_through_prompt(&a, "k", &id).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("damaged") && msg.contains("0 bytes of"),
        "{msg}"
    );
    // Gone.
    std::fs::remove_file(&blob).unwrap();
    let r = read_through_prompt(&a, "k", &id).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    // An image is checked the same way (it is located, not read, for a text-only model).
    std::fs::write(&blob, b"").unwrap();
    let r = a
        .interact(
            "k",
            &json!({"model": "fake-model", "input": [
                {"type": "text", "text": "look"},
                {"type": "image", "uri": format!("files/{id}"), "mime_type": "image/png"}]}),
        )
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
}

#[tokio::test]
async fn starting_a_server_on_the_same_dir_leaves_uploads_in_progress_alone() {
    let a = app(1 << 20);
    let url = a.start("k", 6, json!({})).await;
    assert_eq!(a.chunk(&url, 0, b"abc", false).await.status, StatusCode::OK);
    // An abandoned temp file from long ago, left by a crashed server.
    let old = a.dir.join("tmp").join("abandoned");
    std::fs::write(&old, b"old").unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    // Another server starts on the same data dir.
    localgem_api::files::prepare_dir(&a.dir).unwrap();
    assert!(!old.exists(), "a provably abandoned upload is cleaned");
    assert_eq!(a.leftovers().len(), 1, "{:?}", a.leftovers());
    let r = a.chunk(&url, 3, b"def", true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
