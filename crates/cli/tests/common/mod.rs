//! The `localgem` binary on a free port with a fresh data dir, and the requests the
//! real-model tests send it. They need the models in `LOCALGEM_MODELS_DIR`
//! (`scripts/test.sh` pulls them).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Stop it with SIGTERM, as a service manager does, and check it exits cleanly.
    pub fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = self.child.wait().unwrap();
        assert!(exited.success(), "{exited:?}");
    }
}

/// The generated test projector for a bundled model (`tests/vision/make.sh`, run by
/// `scripts/test.sh`).
pub fn test_mmproj(model: &str) -> PathBuf {
    let p = models_dir().join(format!("test-vision/mmproj-{model}-test.gguf"));
    assert!(
        p.is_file(),
        "{} is missing: run tests/vision/make.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn models_dir() -> PathBuf {
    PathBuf::from(std::env::var("LOCALGEM_MODELS_DIR").expect(
        "set LOCALGEM_MODELS_DIR to a dir holding the bundled models (scripts/test.sh does)",
    ))
}

/// A server with `--exact`: most tests compare answers computed along different paths
/// (reused, restored, batched, fresh), which only bit-exact reuse promises to be equal.
pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
    start_default(data_dir, &[&["--exact"], extra].concat())
}

/// A server with the defaults (flash attention, decoded KV reused, speculation where exact).
pub fn start_default(data_dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_localgem"))
        .args(["serve", "--addr", "127.0.0.1:0", "--threads", "2"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--models-dir")
        .arg(models_dir())
        .args(extra)
        .env("LOCALGEM_PYTHON", "false") // never fetch: the models must already be there
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start localgem");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("server exited before printing its address")
            .unwrap();
        if let Some(rest) = line.split(" at ").nth(1) {
            break rest.trim().to_owned();
        }
    };
    // keep draining stdout so the child never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    let server = Server { child, url };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::blocking::get(format!("{}/healthz", server.url)) {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "model did not load in time");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

impl Server {
    pub fn post(&self, body: Value) -> (u16, Value) {
        self.post_key("test-key", body)
    }

    pub fn post_key(&self, key: &str, body: Value) -> (u16, Value) {
        post_json(&self.url, key, &body)
    }

    pub fn get(&self, id: &str) -> (u16, String) {
        let r = client()
            .get(format!("{}/v1/interactions/{id}", self.url))
            .header("x-goog-api-key", "test-key")
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
}

/// `POST /v1beta/interactions` on the server at `url`: status and JSON body.
pub fn post_json(url: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}/v1beta/interactions"))
        .header("x-goog-api-key", key)
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

pub fn text(v: &Value) -> String {
    v["steps"].as_array().unwrap().last().unwrap()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn greedy(input: &str, max: u32) -> Value {
    json!({"model": "gemini-3-flash-preview", "input": input,
           "generation_config": {"temperature": 0, "max_output_tokens": max}})
}

/// The value of one Prometheus sample line starting with `name` (0 when absent).
pub fn metric(url: &str, name: &str) -> f64 {
    let body = client()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn wait_for_metric(url: &str, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(url, name) < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A system instruction of roughly 900 tokens: longer than Gemma 3's 512-token sliding
/// window, so a restored state must carry what the window layers need.
pub fn long_system() -> String {
    let mut s = String::from("You are a careful librarian. Here is the catalogue:\n");
    for i in 0..60 {
        s.push_str(&format!(
            "Shelf {i} holds {} books about {} written in {}.\n",
            i * 7 + 3,
            ["rivers", "stars", "bread", "ships", "birds", "clocks"][i % 6],
            1800 + i * 3
        ));
    }
    s
}

pub fn chained(input: &str, prev: &Value, model: &str, system: &str) -> Value {
    json!({"model": model, "input": input, "system_instruction": system,
           "previous_interaction_id": prev["id"],
           "generation_config": {"temperature": 0, "max_output_tokens": 24}})
}

pub fn history(turns: &[(&str, String)], next: &str, model: &str, system: &str) -> Value {
    let mut input = Vec::new();
    for (user, answer) in turns {
        input.push(json!({"type": "user_input", "content": [{"type": "text", "text": user}]}));
        input.push(json!({"type": "model_output", "content": [{"type": "text", "text": answer}]}));
    }
    input.push(json!({"type": "user_input", "content": [{"type": "text", "text": next}]}));
    json!({"model": model, "store": false, "input": input, "system_instruction": system,
           "generation_config": {"temperature": 0, "max_output_tokens": 24}})
}

pub fn cached(v: &Value) -> u64 {
    v["usage"]["total_cached_tokens"].as_u64().unwrap()
}

pub fn input_tokens(v: &Value) -> u64 {
    v["usage"]["total_input_tokens"].as_u64().unwrap()
}

/// Upload `bytes` with the resumable protocol; the file's `uri`.
pub fn upload(url: &str, key: &str, bytes: Vec<u8>, mime: &str) -> String {
    let start_up = client()
        .post(format!("{url}/upload/v1beta/files"))
        .header("x-goog-api-key", key)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header(
            "x-goog-upload-header-content-length",
            bytes.len().to_string(),
        )
        .header("x-goog-upload-header-content-type", mime)
        .json(&json!({"file": {"display_name": "upload"}}))
        .send()
        .unwrap();
    assert_eq!(start_up.status().as_u16(), 200);
    let up_url = start_up.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_owned();
    let up = client()
        .post(up_url)
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(up.status().as_u16(), 200);
    let v: Value = up.json().unwrap();
    v["file"]["uri"].as_str().unwrap().to_owned()
}
