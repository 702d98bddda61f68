//! The Files API over HTTP: the resumable upload protocol as the SDKs speak it, get, list and
//! delete, tenancy, and every way an upload can go wrong leaving nothing behind.

mod common;

use axum::http::StatusCode;
use common::{app, app_with, App};
use localgem_core::Store;
use serde_json::{json, Value};

#[tokio::test]
async fn chunked_upload_get_list_delete() {
    let a = app(64 << 20);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    // JS-style start body: camelCase, size as a string.
    let url = a
        .start("k", data.len(), json!({"file": {"displayName": "big", "mimeType": "text/plain", "sizeBytes": data.len().to_string()}}))
        .await;
    let r = a.chunk(&url, 0, &data[..4096], false).await;
    assert_eq!(
        (r.status, r.headers["x-goog-upload-status"].as_str()),
        (StatusCode::OK, "active")
    );
    let r = a.chunk(&url, 4096, &data[4096..], true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let f = &r.body["file"];
    assert_eq!(f["sizeBytes"], "10000");
    assert_eq!(f["displayName"], "big");
    assert_eq!(f["mimeType"], "text/plain");
    assert_eq!(f["state"], "ACTIVE");
    let name = f["name"].as_str().unwrap();
    let id = name.strip_prefix("files/").unwrap();
    assert_eq!(
        f["uri"],
        format!("http://files.test:8080/v1beta/files/{id}")
    );
    let blob = a.blob("k", id).await;
    assert_eq!(std::fs::read(&blob).unwrap(), data);
    assert!(a.leftovers().is_empty());
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(&data));
    assert_eq!(f["sha256Hash"], base64_std(hex.as_bytes()));
    // get (the SDKs reduce names and URIs to the id); another tenant sees nothing
    let r = a.keyed("GET", &format!("/v1/files/{id}"), "k").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], f["name"]);
    assert_eq!(
        r.body["uri"],
        format!("http://files.test:8080/v1/files/{id}")
    );
    let r = a
        .keyed(
            "GET",
            &format!("/v1beta/files/{id}:download?alt=media"),
            "k",
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "uploads are not downloadable"
    );
    let r = a
        .keyed("GET", &format!("/v1beta/files/{id}"), "other")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body["error"]["code"], 404,
        "Google's envelope: {:?}",
        r.body
    );
    assert_eq!(r.body["error"]["status"], "NOT_FOUND");
    // delete
    let r = a
        .keyed("DELETE", &format!("/v1beta/files/{id}"), "other")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.keyed("DELETE", &format!("/v1beta/files/{id}"), "k").await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({})));
    assert!(!blob.exists());
    let r = a.keyed("GET", &format!("/v1beta/files/{id}"), "k").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn list_pages_end_without_a_token() {
    let a = app(1 << 20);
    for i in 0..5 {
        a.upload("k", format!("file {i}").as_bytes(), &format!("f{i}"))
            .await;
    }
    a.upload("other", b"not yours", "x").await;
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        let uri = match &token {
            Some(t) => format!("/v1/files?pageSize=2&pageToken={t}"),
            None => "/v1/files?pageSize=2".to_owned(),
        };
        let r = a.keyed("GET", &uri, "k").await;
        assert_eq!(r.status, StatusCode::OK);
        let files = r.body["files"].as_array().unwrap();
        assert!(files.len() <= 2);
        names.extend(
            files
                .iter()
                .map(|f| f["displayName"].as_str().unwrap().to_owned()),
        );
        match r.body.get("nextPageToken") {
            Some(t) => token = Some(t.as_str().unwrap().to_owned()),
            None => break,
        }
        assert!(page < 5, "the pager never ends");
    }
    assert_eq!(names, ["f4", "f3", "f2", "f1", "f0"]);
    let r = a.keyed("GET", "/v1/files?pageToken=%%%", "k").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a.keyed("GET", "/v1/files", "nobody").await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn bad_uploads_get_4xx_and_leave_nothing_behind() {
    let a = app(1000);
    // not the resumable protocol
    let r = a
        .send(
            "POST",
            "/upload/v1beta/files",
            &[("x-goog-api-key", "k")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    // announced too large: refused at start
    let r = a
        .send(
            "POST",
            "/upload/v1beta/files",
            &[
                ("x-goog-upload-protocol", "resumable"),
                ("x-goog-upload-command", "start"),
                ("x-goog-upload-header-content-length", "5000"),
            ],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    // unknown upload id
    let r = a
        .chunk(
            "/upload/v1beta/files?upload_id=nope&upload_protocol=resumable",
            0,
            b"x",
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.headers.contains_key("x-goog-upload-status"));
    // wrong offset: refused, the upload goes on
    let url = a.start("k", 10, json!({})).await;
    let r = a.chunk(&url, 3, b"abc", false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("offset"));
    let r = a.chunk(&url, 0, b"abcde", false).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = a.chunk(&url, 0, b"abcde", false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a repeated offset");
    // more bytes than announced: dropped whole
    let r = a.chunk(&url, 5, b"0123456789", true).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    let r = a.chunk(&url, 5, b"fghij", true).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the dropped upload is gone"
    );
    // fewer bytes than announced at finalize: dropped
    let url = a.start("k", 10, json!({})).await;
    let r = a.chunk(&url, 0, b"abc", true).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    // over the server's limit without an announced size
    let r = a
        .send(
            "POST",
            "/upload/v1beta/files",
            &[
                ("x-goog-upload-protocol", "resumable"),
                ("x-goog-upload-command", "start"),
            ],
            vec![],
        )
        .await;
    let url = r.headers["x-goog-upload-url"]
        .strip_prefix("http://files.test:8080")
        .unwrap()
        .to_owned();
    let r = a.chunk(&url, 0, &[0u8; 1500], true).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // a taken name
    a.upload("k", b"one", "one").await;
    let f = a.upload("k", b"two", "two").await;
    let taken = f["name"].as_str().unwrap();
    let r = a
        .send(
            "POST",
            "/upload/v1beta/files",
            &[
                ("x-goog-upload-protocol", "resumable"),
                ("x-goog-upload-command", "start"),
                ("x-goog-api-key", "k"),
            ],
            json!({"file": {"name": taken}}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["error"]["status"], "ALREADY_EXISTS");
    // nothing half-written anywhere: only the two finished files
    assert!(a.leftovers().is_empty(), "{:?}", a.leftovers());
    assert_eq!(a.blobs().len(), 2, "{:?}", a.blobs());
}

#[tokio::test]
async fn expired_files_are_purged() {
    let a = app(1 << 20);
    let f = a.upload("k", b"short-lived", "s").await;
    let id = f["name"]
        .as_str()
        .unwrap()
        .strip_prefix("files/")
        .unwrap()
        .to_owned();
    assert_eq!(localgem_api::files::purge(&a.state).await, 0);
    let blob = a.blob("k", &id).await;
    // Age it past its expiry.
    let mut rec = a
        .store
        .get_file(&localgem_api::tenant::Tenant::from_key("k").0, &id)
        .await
        .unwrap()
        .unwrap();
    a.store.delete_file(&rec.tenant, &id).await.unwrap();
    rec.expires_ms = 1;
    a.store.insert_file(&rec).await.unwrap();
    let r = a.keyed("GET", &format!("/v1beta/files/{id}"), "k").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "an expired file is gone at once"
    );
    assert_eq!(localgem_api::files::purge(&a.state).await, 1);
    assert!(!blob.exists());
}

/// A one-page PDF whose text layer says `text` (Helvetica, built by hand with a correct
/// cross-reference table).
fn pdf_with(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 18 Tf 20 100 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

#[tokio::test]
async fn uploaded_documents_reach_the_prompt_as_text() {
    let a = app(1 << 20);
    let txt = a
        .upload("k", b"The capital of Wakanda is Birnin Zana.", "facts")
        .await;
    let pdf = pdf_with("The secret word is pineapple.");
    let url = a
        .start(
            "k",
            pdf.len(),
            json!({"file": {"mime_type": "application/pdf", "display_name": "s.pdf"}}),
        )
        .await;
    let r = a.chunk(&url, 0, &pdf, true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let pdf_file = r.body["file"].clone();
    let html = base64_std(b"<p>Hello <b>HTML</b></p><script>x()</script>");
    let body = json!({"model": "fake-model", "input": [
        {"type": "text", "text": "What do these say?"},
        {"type": "document", "uri": txt["uri"], "mime_type": "text/plain"},
        {"type": "document", "uri": pdf_file["name"], "mime_type": "application/pdf"},
        {"type": "document", "data": html, "mime_type": "text/html"}]});
    let r = a.interact("k", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let prompt = a
        .engine_requests()
        .last()
        .unwrap()
        .messages
        .last()
        .unwrap()
        .content
        .clone();
    assert!(prompt.starts_with("What do these say?"), "{prompt}");
    assert!(
        prompt.contains("The capital of Wakanda is Birnin Zana."),
        "{prompt}"
    );
    assert!(prompt.contains("The secret word is pineapple."), "{prompt}");
    // The extracted texts are kept: the same documents again find them (nothing is added).
    let kept = a.state.documents.bytes();
    assert!(kept > 40, "{kept}");
    let again = a.interact("k", &body).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(a.state.documents.bytes(), kept);
    assert!(
        prompt.contains("Hello HTML") && !prompt.contains("x()"),
        "{prompt}"
    );
    // The prompt grew by the documents (the fake counts words).
    assert!(
        r.body["usage"]["total_input_tokens"].as_u64().unwrap() > 20,
        "{:?}",
        r.body["usage"]
    );

    // What goes wrong is a 4xx naming the part.
    for (part, status, needle) in [
        (
            json!({"type": "document", "uri": "files/doesnotexist", "mime_type": "text/plain"}),
            404,
            "not found",
        ),
        (
            json!({"type": "document", "uri": "https://example.com/a.pdf"}),
            400,
            "not a file of this server",
        ),
        (
            json!({"type": "document", "data": base64_std(&pdf[..pdf.len() / 2]), "mime_type": "application/pdf"}),
            400,
            "PDF",
        ),
        (
            json!({"type": "document", "data": "!!!", "mime_type": "text/plain"}),
            400,
            "base64",
        ),
        (
            json!({"type": "document", "data": base64_std(b"x"), "mime_type": "application/zip"}),
            400,
            "not supported",
        ),
        (
            json!({"type": "image", "uri": txt["uri"], "mime_type": "image/png"}),
            400,
            "cannot take image",
        ),
    ] {
        let body = json!({"model": "fake-model", "input": [{"type": "text", "text": "q"}, part]});
        let r = a.interact("k", &body).await;
        assert_eq!(r.status.as_u16(), status, "{part}: {:?}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{part}: {:?}",
            r.body
        );
    }
    // Another key cannot use the file.
    let body = json!({"model": "fake-model", "input": [{"type": "document", "uri": txt["uri"], "mime_type": "text/plain"}]});
    let r = a
        .send(
            "POST",
            "/v1beta/interactions",
            &[
                ("x-goog-api-key", "other"),
                ("content-type", "application/json"),
            ],
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// An image encoded in `format`, `w`x`h`, a gradient.
fn encoded(format: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 99]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

/// The images of a message.
fn images(m: &localgem_core::ChatMessage) -> Vec<localgem_core::Image> {
    m.media
        .iter()
        .filter_map(|a| match &a.data {
            localgem_core::MediaData::Image(i) => Some(i.clone()),
            localgem_core::MediaData::Audio(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn images_reach_a_vision_model_decoded_in_place() {
    use image::ImageFormat;
    let a = app_with(1 << 20, true);
    let png = encoded(ImageFormat::Png, 6, 4);
    let url = a
        .start("k", png.len(), json!({"file": {"mime_type": "image/png"}}))
        .await;
    let r = a.chunk(&url, 0, &png, true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let file = r.body["file"].clone();
    let post = |input: Value| {
        let a = &a;
        async move {
            a.interact("k", &json!({"model": "fake-model", "input": input}))
                .await
        }
    };
    // Every supported format decodes, by uri or inline, wherever the part is.
    let jpeg_bytes = encoded(ImageFormat::Jpeg, 5, 3);
    let jpeg = base64_std(&jpeg_bytes);
    let gif = base64_std(&encoded(ImageFormat::Gif, 2, 2));
    let webp = base64_std(&encoded(ImageFormat::WebP, 3, 7));
    let r = post(json!([
        {"type": "image", "uri": file["uri"], "mime_type": "image/png"},
        {"type": "text", "text": "compare \u{fffc}these"},
        {"type": "image", "data": jpeg, "mime_type": "image/jpeg"},
        {"type": "image", "data": gif, "mime_type": "image/gif"},
        {"type": "image", "data": webp, "mime_type": "image/webp"}]))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let msg = a
        .engine_requests()
        .last()
        .unwrap()
        .messages
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        msg.content,
        "\u{fffc}\ncompare these\n\u{fffc}\n\u{fffc}\n\u{fffc}"
    );
    let sizes: Vec<(u32, u32)> = images(&msg).iter().map(|i| (i.width, i.height)).collect();
    assert_eq!(sizes, [(6, 4), (5, 3), (2, 2), (3, 7)]);
    assert_eq!(images(&msg)[0].rgb.len(), 6 * 4 * 3);
    // The fake counts 16 prompt tokens an image; usage reports them as image input.
    assert!(r.body["usage"]["total_input_tokens"].as_u64().unwrap() >= 64);
    let by = &r.body["usage"]["input_tokens_by_modality"];
    assert_eq!(by[1], json!({"modality": "image", "tokens": 64}), "{by}");
    assert_eq!(by[0]["modality"], "text", "{by}");

    // A chained turn carries the earlier image again, from the stored input.
    let prev = r.body["id"].as_str().unwrap().to_owned();
    let body = json!({"model": "fake-model", "input": "and now?", "previous_interaction_id": prev});
    let r = a.interact("k", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let req = a.engine_requests().last().unwrap().clone();
    assert_eq!(
        req.messages.iter().map(|m| images(m).len()).sum::<usize>(),
        4
    );
    // ... without decoding them again: the same pixels, shared.
    let first_png = &images(&msg)[0].rgb;
    assert!(std::sync::Arc::ptr_eq(
        first_png,
        &images(&req.messages[0])[0].rgb
    ));
    assert_eq!(a.state.images.bytes(), (6 * 4 + 5 * 3 + 2 * 2 + 3 * 7) * 3);

    // Images that cannot be decoded: 400 naming the part.
    let truncated = encoded(ImageFormat::Png, 40, 40);
    let bmp = b"BM\x1e\0\0\0\0\0\0\0\x1a\0\0\0".to_vec();
    for (part, needle) in [
        (
            json!({"type": "image", "data": base64_std(&truncated[..truncated.len() / 2]), "mime_type": "image/png"}),
            "input step 0, content 0: the image cannot be decoded",
        ),
        (
            json!({"type": "image", "data": base64_std(&jpeg_bytes[..jpeg_bytes.len() - 40]), "mime_type": "image/jpeg"}),
            "the JPEG data is truncated",
        ),
        (
            json!({"type": "image", "data": base64_std(b"plain text, not pixels"), "mime_type": "image/png"}),
            "not a JPEG, PNG, WebP or GIF image (declared image/png)",
        ),
        (
            json!({"type": "image", "data": base64_std(&bmp), "mime_type": "image/bmp"}),
            "images in BMP format are not supported",
        ),
        (
            json!({"type": "audio", "data": base64_std(b"RIFF"), "mime_type": "audio/wav"}),
            "model fake-model cannot take audio input",
        ),
    ] {
        let r = post(json!([part])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        let m = r.body["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{m}");
    }
}

/// `generateContent` with a text file of the Files API, as the Python SDK sends a File
/// (fileData with snake_case inside).
async fn generate_with_file(a: &App, key: &str, uri: &str) -> common::Reply {
    let body = json!({"contents": [{"role": "user", "parts": [
        {"fileData": {"file_uri": uri, "mime_type": "text/plain"}},
        {"text": "What is the secret word?"}]}]});
    a.send(
        "POST",
        "/v1beta/models/fake-model:generateContent",
        &[
            ("x-goog-api-key", key),
            ("content-type", "application/json"),
        ],
        body.to_string().into_bytes(),
    )
    .await
}

#[tokio::test]
async fn generate_content_reads_a_keys_own_uploads_and_no_one_elses() {
    let a = app(1 << 20);
    let f = a.upload("k", b"The secret word is pelican.", "notes").await;
    let uri = f["uri"].as_str().unwrap();
    let r = generate_with_file(&a, "k", uri).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let prompt = a.fake.requests.lock().unwrap().last().unwrap().messages[0]
        .content
        .clone();
    assert!(prompt.contains("The secret word is pelican."), "{prompt}");
    // Another key: not found, in Google's envelope, and nothing reached the engine.
    let r = generate_with_file(&a, "other", uri).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], 404);
    assert_eq!(a.fake.requests.lock().unwrap().len(), 1);
}
