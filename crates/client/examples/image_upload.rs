//! Multimodal input: upload an image with the Files API, then ask about it.
//!
//! ```sh
//! GEMINI_API_KEY=… cargo run -p localgem-client --example image_upload -- path/to/organ.jpg
//! ```
//!
//! The MIME type is guessed from the file's extension.

use localgem_client::{input, Client, InteractionRequest};

#[tokio::main]
async fn main() -> localgem_client::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "path/to/organ.jpg".to_owned());
    let client = Client::new()?;
    let uploaded_file = client.files().upload(&path).await?;
    let interaction = client
        .interactions()
        .create(InteractionRequest::new(
            "gemini-3-flash-preview",
            vec![
                input::text("Tell me about this instrument"),
                input::image_uri(&uploaded_file.uri, &uploaded_file.mime_type),
            ],
        ))
        .await?;
    println!("{}", interaction.output_text());
    Ok(())
}
