//! Streaming: print the answer's text as it is generated.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example streaming
//! ```

use std::io::Write;

use futures::StreamExt;
use localgem_client::{Client, Delta, Event, InteractionRequest, StreamEvent};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let client = Client::new()?;
    let mut stream = client
        .interactions()
        .create_stream(InteractionRequest::new(
            "gemini-3-flash-preview",
            "Explain how AI works",
        ))
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
