//! Thinking with Gemini: `generation_config.thinking_level`.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example thinking_level
//! ```

use localgem_client::{Client, GenerationConfig, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;
    let interaction = client
        .interactions()
        .create(
            InteractionRequest::new("gemini-3-flash-preview", "How does AI work?")
                .generation_config(GenerationConfig {
                    thinking_level: Some("low".into()),
                    ..Default::default()
                }),
        )
        .await?;
    println!("{}", interaction.output_text());
    Ok(())
}
