//! Overriding generation parameters such as the temperature through `generation_config`.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example temperature
//! ```

use localgem_client::{Client, GenerationConfig, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;
    let interaction = client
        .interactions()
        .create(
            InteractionRequest::new("gemini-3-flash-preview", "Explain how AI works")
                .generation_config(GenerationConfig {
                    temperature: Some(1.0),
                    ..Default::default()
                }),
        )
        .await?;
    println!("{}", interaction.output_text());
    Ok(())
}
