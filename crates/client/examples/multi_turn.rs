//! A multi-turn conversation kept by the server: `previous_interaction_id` links the turns.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example multi_turn
//! ```

use localgem_client::{Client, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;
    let interaction1 = client
        .interactions()
        .create(InteractionRequest::new(
            "gemini-3-flash-preview",
            "I have 2 dogs in my house.",
        ))
        .await?;
    println!("{}", interaction1.output_text());

    let interaction2 = client
        .interactions()
        .create(
            InteractionRequest::new("gemini-3-flash-preview", "How many paws are in my house?")
                .previous_interaction_id(&interaction1.id),
        )
        .await?;
    println!("{}", interaction2.output_text());
    Ok(())
}
