//! A multi-turn conversation whose second turn is streamed.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example multi_turn_streaming
//! ```

use std::io::Write;

use futures::StreamExt;
use localgem_client::{Client, Delta, Event, InteractionRequest, StreamEvent};

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

    let mut stream = client
        .interactions()
        .create_stream(
            InteractionRequest::new("gemini-3-flash-preview", "How many paws are in my house?")
                .previous_interaction_id(&interaction1.id),
        )
        .await?;
    while let Some(event) = stream.next().await {
        if let Event::Known(StreamEvent::StepDelta {
            delta: Delta::Text { text },
            ..
        }) = event?
        {
            print!("{text}");
            std::io::stdout().flush()?;
        }
    }
    println!();
    Ok(())
}
