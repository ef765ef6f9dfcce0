//! A conversation with MOD: each turn renders the history with every policy's chat template,
//! keeps what the policies' caches already hold (only the new turn is decoded), and decodes
//! the reply. Weights, divergence and temperature can change between turns.

use crate::pipeline::decode::{Decoder, Event, Flow, Generation, Request};
use crate::pipeline::engine::chat::{Message, TRANSCRIPT_STOP};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::{parse_weights, Recipe};
use crate::pipeline::settings::Settings;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// A line typed in a chat: a message or a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Message(String),
    Weights(Vec<f64>),
    Divergence(String),
    Temperature(f64),
    Reset,
    Save(PathBuf),
    Help,
}

/// What `/help` prints.
pub const HELP: &str = "commands: /weights W1,W2,…  /divergence NAME  /temperature T  /reset  \
/save FILE  /help   (Ctrl-C stops a reply, Ctrl-D exits)";

impl Input {
    /// Reads one line; `None` for an empty one.
    pub fn parse(line: &str) -> Result<Option<Input>> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        let Some(command) = line.strip_prefix('/') else {
            return Ok(Some(Input::Message(line.to_string())));
        };
        let (name, arg) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
        let arg = arg.trim();
        let need = |what: &str| -> Result<()> {
            if arg.is_empty() {
                bail!("/{name} needs {what}");
            }
            Ok(())
        };
        Ok(Some(match name {
            "weights" => {
                need("weights, e.g. /weights 0.3,0.7")?;
                Input::Weights(parse_weights(arg)?)
            }
            "divergence" => {
                need("a name, e.g. /divergence jsd")?;
                Input::Divergence(arg.to_string())
            }
            "temperature" => {
                need("a number, e.g. /temperature 0.7")?;
                let t: f64 = arg
                    .parse()
                    .map_err(|_| anyhow::anyhow!("/temperature: '{arg}' is not a number"))?;
                Input::Temperature(t)
            }
            "reset" => Input::Reset,
            "save" => {
                need("a file name")?;
                Input::Save(PathBuf::from(arg))
            }
            "help" => Input::Help,
            other => bail!("unknown command /{other}; {HELP}"),
        }))
    }
}

/// A conversation in progress.
pub struct Chat<'e> {
    engine: &'e Engine,
    recipe: Recipe,
    settings: Settings,
    template: String,
    messages: Vec<Message>,
    /// One lane, kept from turn to turn so that the caches hold the conversation so far.
    decoder: Decoder<'e>,
}

/// One reply and how many prompt tokens every policy found already cached.
pub struct Reply {
    pub generation: Generation,
    pub reused_tokens: usize,
}

impl<'e> Chat<'e> {
    /// `template` applies to policies that set none (`none` = a plain transcript).
    pub fn new(
        engine: &'e Engine,
        recipe: Recipe,
        mut settings: Settings,
        template: &str,
        options: SessionOptions,
    ) -> Result<Self> {
        // Every policy's template is checked now, not at the first reply.
        let probe = [Message { role: "user".into(), content: "hello".into() }];
        engine.chat_tokens(&probe, template, None)?;
        if engine.uses_transcript(template) && !settings.stops.iter().any(|s| s == TRANSCRIPT_STOP)
        {
            settings.stops.push(TRANSCRIPT_STOP.to_string());
        }
        Ok(Self {
            engine,
            recipe,
            settings,
            template: template.to_string(),
            messages: Vec::new(),
            decoder: Decoder::new(engine, 1, options),
        })
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Applies a command; returns a line to show.
    pub fn command(&mut self, input: Input) -> Result<String> {
        match input {
            Input::Message(_) => bail!("a message is not a command"),
            Input::Weights(w) => {
                let mut r = self.recipe.clone();
                r.set_weights(w)?;
                r.apply_weight_rules(false)?;
                r.terms()?;
                self.recipe = r;
                Ok(format!("weights {:?}", self.recipe.weights))
            }
            Input::Divergence(d) => {
                let mut r = self.recipe.clone();
                r.divergence = d.parse()?;
                r.apply_weight_rules(false)?;
                r.terms()?;
                self.recipe = r;
                Ok(format!("divergence {}", self.recipe.divergence))
            }
            Input::Temperature(t) => {
                let mut s = self.settings.sampling.clone();
                s.temperature = t;
                s.check()?;
                self.settings.sampling = s;
                Ok(format!("temperature {t}"))
            }
            Input::Reset => {
                self.messages.clear();
                Ok("conversation cleared".into())
            }
            Input::Save(path) => {
                let v = serde_json::json!({
                    "weights": self.recipe.weights,
                    "divergence": self.recipe.divergence.name(),
                    "messages": self.messages,
                });
                std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(format!("saved {} messages to {}", self.messages.len(), path.display()))
            }
            Input::Help => Ok(HELP.into()),
        }
    }

    /// Adds the user's message and decodes the reply, streaming it to `on_text`; `cancel`
    /// stops it early (the partial reply is kept). On an error the message is taken back and
    /// the conversation stays as it was.
    pub fn reply(
        &mut self,
        user: &str,
        on_text: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<Reply> {
        self.messages.push(Message { role: "user".into(), content: user.to_string() });
        let outcome = self.decode_reply(on_text, cancel);
        match outcome {
            Ok(reply) => {
                let content = reply.generation.text.trim().to_string();
                self.messages.push(Message { role: "assistant".into(), content });
                Ok(reply)
            }
            Err(e) => {
                self.messages.pop();
                Err(e)
            }
        }
    }

    fn decode_reply(
        &mut self,
        on_text: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<Reply> {
        let request = Request::new(
            self.recipe.clone(),
            self.settings.clone(),
            self.engine.chat_tokens(&self.messages, &self.template, None)?,
            true,
        );
        self.decoder.submit(0, request)?;
        cancel.store(false, Ordering::SeqCst);
        let mut outcome = None;
        self.decoder.run(&mut |_, event| {
            match event {
                Event::Token { text, .. } => {
                    on_text(text);
                    if cancel.swap(false, Ordering::SeqCst) {
                        return Ok(Flow::Stop);
                    }
                }
                Event::Text(text) => on_text(text),
                Event::Done(g) => outcome = Some(Ok(g)),
                Event::Failed(e) => outcome = Some(Err(e)),
            }
            Ok(Flow::Continue)
        })?;
        let generation = outcome.unwrap_or_else(|| bail!("the reply produced no result"))?;
        Ok(Reply { reused_tokens: generation.cached_tokens, generation: *generation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Input::parse("  hello ").unwrap(), Some(Input::Message("hello".into())));
        assert_eq!(Input::parse("").unwrap(), None);
        assert_eq!(
            Input::parse("/weights 0.2, 0.8").unwrap(),
            Some(Input::Weights(vec![0.2, 0.8]))
        );
        assert_eq!(Input::parse("/divergence jsd").unwrap(), Some(Input::Divergence("jsd".into())));
        assert_eq!(Input::parse("/temperature 0.7").unwrap(), Some(Input::Temperature(0.7)));
        assert_eq!(Input::parse("/reset").unwrap(), Some(Input::Reset));
        assert_eq!(Input::parse("/save a.json").unwrap(), Some(Input::Save("a.json".into())));
        assert_eq!(Input::parse("/help").unwrap(), Some(Input::Help));
        for bad in ["/weights", "/weights x", "/temperature hot", "/save", "/frobnicate"] {
            assert!(Input::parse(bad).is_err(), "{bad}");
        }
    }
}
