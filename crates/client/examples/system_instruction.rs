//! A system instruction shapes the model's behaviour.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example system_instruction
//! ```

use localgem_client::{Client, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;
    let interaction = client
        .interactions()
        .create(
            InteractionRequest::new("gemini-3-flash-preview", "Hello there")
                .system_instruction("You are a cat. Your name is Neko."),
        )
        .await?;
    println!("{}", interaction.output_text());
    Ok(())
}
