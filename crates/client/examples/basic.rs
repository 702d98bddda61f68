//! Text generation: one prompt, one answer.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example basic
//! # against a local server:
//! GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8080 GEMINI_API_KEY=local cargo run -p localgem-client --example basic
//! ```

use localgem_client::{Client, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;
    let interaction = client
        .interactions()
        .create(InteractionRequest::new(
            "gemini-3-flash-preview",
            "How does AI work?",
        ))
        .await?;
    println!("{}", interaction.output_text());
    Ok(())
}
