//! Chat templates: the GGUF's own Jinja template rendered with minijinja, or, for a GGUF
//! without one, the known template of its architecture.

use localgem_core::{ChatMessage, Role};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

/// Gemma's turn format, used for gemma-family GGUFs that carry no template (such as the
/// Gemma 3 270M base file). Gemma has no system role: the system instruction is put in front
/// of the first user turn.
const GEMMA: &str = r#"{{ bos_token }}
{%- set ns = namespace(system='', done=false) -%}
{%- for m in messages if m.role == 'system' %}{% set ns.system = m.content %}{% endfor -%}
{%- for m in messages if m.role != 'system' -%}
<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}
{% if m.role == 'user' and not ns.done and ns.system %}{{ ns.system | trim }}

{% endif %}{% if m.role == 'user' %}{% set ns.done = true %}{% endif %}{{ m.content | trim }}<end_of_turn>
{% endfor -%}
{%- if add_generation_prompt %}<start_of_turn>model
{% endif -%}"#;

/// ChatML, the fallback for other architectures without a template.
const CHATML: &str = r#"{%- for m in messages -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"#;

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Where the template came from: `gguf`, `gemma` or `chatml`.
    pub source: &'static str,
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'static str,
    content: &'a str,
}

impl ChatTemplate {
    /// Compile the GGUF's template, or the architecture's fallback when there is none.
    ///
    /// # Errors
    /// A template that does not compile.
    pub fn new(
        gguf_template: Option<String>,
        arch: &str,
        bos: &str,
        eos: &str,
    ) -> Result<Self, Error> {
        let (src, source) = match gguf_template {
            Some(t) if !t.trim().is_empty() => (t, "gguf"),
            _ if arch.starts_with("gemma") => (GEMMA.to_owned(), "gemma"),
            _ => (CHATML.to_owned(), "chatml"),
        };
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use this for "today's date"; a fixed-format UTC date keeps prompts
            // reproducible within a day.
            let _ = fmt;
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            civil_date(secs)
        });
        env.add_template_owned("chat", src)?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
            source,
        })
    }

    /// Render the conversation with the generation prompt appended.
    ///
    /// # Errors
    /// The template raised an error (e.g. it refuses a role order).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, Error> {
        let msgs: Vec<Msg<'_>> = messages
            .iter()
            .map(|m| Msg {
                role: match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Model => "assistant",
                },
                content: &m.content,
            })
            .collect();
        self.env.get_template("chat")?.render(context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
    }
}

/// `YYYY-MM-DD`-free "DD Mon YYYY" date of a unix time, as templates' `strftime_now("%d %b %Y")`.
fn civil_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{d:02} {} {y}", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn conv(with_system: bool) -> Vec<ChatMessage> {
        let mut v = Vec::new();
        if with_system {
            v.push(ChatMessage::new(Role::System, "You are a cat."));
        }
        v.push(ChatMessage::new(Role::User, "I have 2 dogs."));
        v.push(ChatMessage::new(Role::Model, "Nice!"));
        v.push(ChatMessage::new(Role::User, "How many paws?"));
        v
    }

    #[test]
    fn smollm2_gguf_template() {
        let t =
            ChatTemplate::new(Some(SMOLLM2.into()), "llama", "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(t.source, "gguf");
        assert_eq!(
            t.render(&conv(true)).unwrap(),
            "<|im_start|>system\nYou are a cat.<|im_end|>\n<|im_start|>user\nI have 2 dogs.<|im_end|>\n\
             <|im_start|>assistant\nNice!<|im_end|>\n<|im_start|>user\nHow many paws?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(t
            .render(&conv(false))
            .unwrap()
            .starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    }

    #[test]
    fn gemma_fallback_merges_system_into_first_user_turn() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>", "<eos>").unwrap();
        assert_eq!(t.source, "gemma");
        assert_eq!(
            t.render(&conv(true)).unwrap(),
            "<bos><start_of_turn>user\nYou are a cat.\n\nI have 2 dogs.<end_of_turn>\n\
             <start_of_turn>model\nNice!<end_of_turn>\n<start_of_turn>user\nHow many paws?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
        assert_eq!(
            t.render(&conv(false)).unwrap(),
            "<bos><start_of_turn>user\nI have 2 dogs.<end_of_turn>\n\
             <start_of_turn>model\nNice!<end_of_turn>\n<start_of_turn>user\nHow many paws?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }

    #[test]
    fn chatml_fallback_for_other_architectures() {
        let t = ChatTemplate::new(Some("  ".into()), "llama", "", "").unwrap();
        assert_eq!(t.source, "chatml");
        assert!(t
            .render(&conv(false))
            .unwrap()
            .ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn template_exceptions_are_errors() {
        let t = ChatTemplate::new(
            Some("{{ raise_exception('no system role') }}".into()),
            "x",
            "",
            "",
        )
        .unwrap();
        assert!(t
            .render(&conv(true))
            .unwrap_err()
            .to_string()
            .contains("no system role"));
    }

    #[test]
    fn pycompat_methods_work() {
        let t = ChatTemplate::new(
            Some("{% for m in messages %}{{ m.content.strip() | upper }}{% endfor %}".into()),
            "x",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new(Role::User, " hi ")]).unwrap(),
            "HI"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "01 Jan 1970");
        assert_eq!(civil_date(1_795_000_000), "18 Nov 2026");
    }
}
