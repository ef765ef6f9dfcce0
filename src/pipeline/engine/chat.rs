//! Chat formatting: a conversation rendered into one policy's prompt with its template and
//! system prompt, and tokenized with the template's special tokens.

use super::Engine;
use anyhow::{anyhow, bail, Result};
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate};
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant` (`system` prompts come from the policies).
    pub role: String,
    pub content: String,
}

/// The plain transcript used with `template = "none"` (base models): the reply stops where
/// the model starts the next user turn.
pub const TRANSCRIPT_STOP: &str = "\nUser:";

impl Engine {
    /// Policy `p`'s prompt for the conversation, ending where the assistant's reply starts.
    /// `default_template` applies where the policy sets none.
    pub fn render_chat(
        &self,
        p: usize,
        messages: &[Message],
        default_template: &str,
    ) -> Result<String> {
        let system = self.policies()[p].system.clone();
        self.render_chat_with(p, messages, default_template, system.as_deref())
    }

    /// As [`Engine::render_chat`] with an explicit system prompt (`None`: none).
    pub fn render_chat_with(
        &self,
        p: usize,
        messages: &[Message],
        default_template: &str,
        system: Option<&str>,
    ) -> Result<String> {
        let policy = &self.policies()[p];
        let template = self.template_of(p, default_template);
        let body = match template {
            "none" => transcript(system, messages),
            name => {
                let tmpl = if name == "model" {
                    self.model(p).chat_template(None).map_err(|_| {
                        anyhow!(
                            "model {} has no chat template of its own; set template to a built-in \
                             name (gemma, chatml, llama3, …) or to none",
                            policy.model.display()
                        )
                    })?
                } else {
                    LlamaChatTemplate::new(name)
                        .map_err(|_| anyhow!("bad chat template name '{name}'"))?
                };
                let mut chat = Vec::with_capacity(messages.len() + 1);
                if let Some(system) = system {
                    chat.push(message("system", system)?);
                }
                for m in messages {
                    chat.push(message(&m.role, &m.content)?);
                }
                self.model(p).apply_chat_template(&tmpl, &chat, true).map_err(|_| {
                    anyhow!(
                        "chat template '{name}' is not one llama.cpp knows (policy '{}')",
                        policy.name
                    )
                })?
            }
        };
        Ok(format!("{}{body}", policy.prefix))
    }

    /// Tokenizes a rendered chat: BOS where the model wants it, template markers as the
    /// special tokens they are.
    pub fn tokenize_chat(&self, p: usize, text: &str) -> Vec<LlamaToken> {
        self.model(p).vocab().tokenize(text.as_bytes(), true, true)
    }

    /// Every policy's prompt for a conversation, rendered with its template
    /// (`default_template` where it sets none) and tokenized. `systems` gives each policy's
    /// system prompt; without it each policy keeps its own.
    pub fn chat_tokens(
        &self,
        messages: &[Message],
        default_template: &str,
        systems: Option<&[Option<String>]>,
    ) -> Result<Vec<Vec<LlamaToken>>> {
        (0..self.policies().len())
            .map(|p| {
                let text = match systems {
                    Some(s) => {
                        self.render_chat_with(p, messages, default_template, s[p].as_deref())?
                    }
                    None => self.render_chat(p, messages, default_template)?,
                };
                Ok(self.tokenize_chat(p, &text))
            })
            .collect()
    }

    /// The template policy `p` formats conversations with: its own, else `default_template`;
    /// `auto` is `model` where the GGUF carries a chat template and `none` where it does not.
    pub fn template_of<'a>(&'a self, p: usize, default_template: &'a str) -> &'a str {
        match self.policies()[p].template.as_deref().unwrap_or(default_template) {
            "auto" if self.model(p).chat_template(None).is_ok() => "model",
            "auto" => "none",
            name => name,
        }
    }

    /// Whether any policy formats conversations as the plain transcript.
    pub fn uses_transcript(&self, default_template: &str) -> bool {
        (0..self.policies().len()).any(|p| self.template_of(p, default_template) == "none")
    }
}

fn message(role: &str, content: &str) -> Result<LlamaChatMessage> {
    if role != "user" && role != "assistant" && role != "system" {
        bail!("unknown chat role '{role}' (user, assistant or system)");
    }
    LlamaChatMessage::new(role.into(), content.into())
        .map_err(|_| anyhow!("a chat message cannot contain a NUL character"))
}

/// `System\n\nUser: …\nAssistant: …\n…Assistant:`.
fn transcript(system: Option<&str>, messages: &[Message]) -> String {
    let mut out = String::new();
    if let Some(s) = system {
        out.push_str(s.trim());
        out.push_str("\n\n");
    }
    for m in messages {
        let who = if m.role == "assistant" { "Assistant" } else { "User" };
        out.push_str(&format!("{who}: {}\n", m.content.trim()));
    }
    out.push_str("Assistant:");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_format() {
        let m = [
            Message { role: "user".into(), content: "Hi ".into() },
            Message { role: "assistant".into(), content: " Hello!".into() },
            Message { role: "user".into(), content: "Name?".into() },
        ];
        assert_eq!(
            transcript(Some("Be brief."), &m),
            "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Name?\nAssistant:"
        );
        assert_eq!(transcript(None, &m[..1]), "User: Hi\nAssistant:");
    }
}
