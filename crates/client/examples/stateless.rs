//! A stateless conversation: `store(false)`, and the client keeps the history as a list of
//! steps that it sends back in full on every turn.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example stateless
//! ```

use localgem_client::{input, AnyStep, Client, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;

    // Initialize history with the first user turn.
    let mut history: Vec<AnyStep> = vec![input::user_text("I have 2 dogs in my house.").into()];

    // Turn 1: send the request with store=false.
    let interaction1 = client
        .interactions()
        .create(InteractionRequest::new("gemini-3-flash-preview", &history).store(false))
        .await?;
    println!("Response 1: {}", interaction1.output_text());

    // Append the model's response steps to the history, unchanged.
    history.extend(interaction1.steps);

    // Append the next user turn as a user_input step.
    history.push(input::user_text("How many paws are in my house?").into());

    // Turn 2: send the full history with store=false.
    let interaction2 = client
        .interactions()
        .create(InteractionRequest::new("gemini-3-flash-preview", &history).store(false))
        .await?;
    println!("Response 2: {}", interaction2.output_text());
    Ok(())
}
