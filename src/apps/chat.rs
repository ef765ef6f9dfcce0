//! A conversation with MOD: each turn renders the history with every policy's chat template,
//! keeps what the policies' caches already hold (only the new turn is decoded), and decodes
//! the reply. Weights, divergence and temperature can change between turns.

use crate::output::write_whole;
use crate::pipeline::bytes::Unit;
use crate::pipeline::decode::bytes::ByteDecoder;
use crate::pipeline::decode::{Decoder, Event, Flow, Generation, Request};
use crate::pipeline::engine::chat::{Message, TRANSCRIPT_STOP};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::{parse_weights, Recipe};
use crate::pipeline::settings::Settings;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// A line typed in a chat: a message or a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Message(String),
    /// `/weights`: show them (`None`) or change them.
    Weights(Option<WeightChange>),
    /// `/divergence`: show it or set it by name.
    Divergence(Option<String>),
    /// `/temperature`: show it or set it.
    Temperature(Option<f64>),
    Reset,
    /// `/save FILE`: the conversation and settings as JSON.
    Save(PathBuf),
    /// `/save-recipe FILE`: the recipe with the current weights, divergence and temperature.
    SaveRecipe(PathBuf),
    /// `/load FILE`: a conversation written by `/save`.
    Load(PathBuf),
    Help,
    Quit,
}

/// New weights: one per expert in recipe order, or some experts' by name (the others keep
/// theirs).
#[derive(Debug, Clone, PartialEq)]
pub enum WeightChange {
    All(Vec<f64>),
    Named(Vec<(String, f64)>),
}

/// The commands, for `/help` and for a mistyped command.
pub const COMMANDS: &str = "commands: /weights [W1,W2,… | NAME=W …]  /divergence [NAME]  \
/temperature [T]  /reset  /save FILE  /load FILE  /save-recipe FILE  /help  /quit   \
(Ctrl-C stops a reply, Ctrl-D or /quit exits)";

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
        let file = |what: &str| -> Result<PathBuf> {
            if arg.is_empty() {
                bail!("/{name} needs a file name, e.g. /{name} {what}");
            }
            Ok(PathBuf::from(arg))
        };
        let given = (!arg.is_empty()).then_some(arg);
        Ok(Some(match name {
            "weights" | "w" => Input::Weights(given.map(parse_weight_change).transpose()?),
            "divergence" => Input::Divergence(given.map(str::to_string)),
            "temperature" | "temp" => Input::Temperature(
                given
                    .map(|t| {
                        t.parse::<f64>()
                            .map_err(|_| anyhow::anyhow!("/temperature: '{t}' is not a number"))
                    })
                    .transpose()?,
            ),
            "reset" | "clear" => Input::Reset,
            "save" => Input::Save(file("chat.json")?),
            "save-recipe" => Input::SaveRecipe(file("steered.toml")?),
            "load" => Input::Load(file("chat.json")?),
            "help" | "?" => Input::Help,
            "quit" | "exit" | "bye" => Input::Quit,
            other => bail!("unknown command /{other}; {COMMANDS}"),
        }))
    }
}

/// `0.2,0.8` (one per expert) or `playful=1 concise=0.5` (by name, commas or spaces between).
fn parse_weight_change(arg: &str) -> Result<WeightChange> {
    if !arg.contains('=') {
        return Ok(WeightChange::All(parse_weights(arg)?));
    }
    let named = arg
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("/weights: '{part}' is not NAME=WEIGHT; give all weights by name, e.g. /weights playful=1 concise=0.5")
            })?;
            let w = parse_weights(value)?;
            Ok((name.trim().to_string(), w[0]))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(WeightChange::Named(named))
}

/// What `/save` writes and `/load` reads.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    weights: Option<Vec<f64>>,
    divergence: Option<String>,
    temperature: Option<f64>,
    messages: Vec<Message>,
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
    /// For policies combined over bytes, the byte decoder instead (its sessions kept too).
    bytes: Option<ByteDecoder<'e>>,
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
        // Every policy of the recipe gets its context now, not only those the first weights
        // need: a policy's cache does not depend on the weights, so after `/weights` or
        // `/divergence` the policies keep the conversation and only one that joins late
        // decodes it.
        let all: Vec<usize> = (0..engine.policies().len()).collect();
        let mut decoder = Decoder::new(engine, 1, options);
        let mut bytes = None;
        if engine.unit() == Unit::Bytes {
            let mut b = ByteDecoder::new(engine, options);
            b.prepare()?;
            bytes = Some(b);
        } else {
            decoder.prepare(&all)?;
        }
        Ok(Self {
            engine,
            recipe,
            settings,
            template: template.to_string(),
            messages: Vec::new(),
            decoder,
            bytes,
        })
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The settings the next reply uses.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Applies a command; returns a line to show. A command that fails changes nothing.
    pub fn command(&mut self, input: Input) -> Result<String> {
        match input {
            Input::Message(_) => bail!("a message is not a command"),
            Input::Quit => bail!("/quit ends the chat loop, not a command for the conversation"),
            Input::Weights(None) => Ok(self.weights_line()),
            Input::Weights(Some(change)) => {
                let weights = match change {
                    WeightChange::All(w) => w,
                    WeightChange::Named(named) => {
                        let mut w = self.recipe.weights.clone();
                        for (name, value) in named {
                            let i = self
                                .recipe
                                .experts
                                .iter()
                                .position(|e| e.name == name)
                                .ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "/weights: no expert is named '{name}' (the experts: {})",
                                        self.expert_names()
                                    )
                                })?;
                            w[i] = value;
                        }
                        w
                    }
                };
                let mut r = self.recipe.clone();
                r.set_weights(weights)?;
                r.apply_weight_rules(false)?;
                r.terms()?;
                self.recipe = r;
                Ok(self.weights_line())
            }
            Input::Divergence(None) => Ok(format!("divergence {}", self.recipe.divergence)),
            Input::Divergence(Some(d)) => {
                let mut r = self.recipe.clone();
                r.divergence = d.parse()?;
                r.apply_weight_rules(false)?;
                r.terms()?;
                self.recipe = r;
                Ok(format!("divergence {}", self.recipe.divergence))
            }
            Input::Temperature(None) => {
                Ok(format!("temperature {}", self.settings.sampling.temperature))
            }
            Input::Temperature(Some(t)) => {
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
                let saved = Saved {
                    weights: Some(self.recipe.weights.clone()),
                    divergence: Some(self.recipe.divergence.name()),
                    temperature: Some(self.settings.sampling.temperature),
                    messages: self.messages.clone(),
                };
                write_whole(&path, (serde_json::to_string_pretty(&saved)? + "\n").as_bytes())?;
                Ok(format!("saved {} messages to {}", self.messages.len(), path.display()))
            }
            Input::Load(path) => self.load(&path),
            Input::SaveRecipe(path) => {
                write_whole(&path, self.recipe_now()?.to_toml()?.as_bytes())?;
                Ok(format!(
                    "saved the recipe to {}; use it with --recipe {}",
                    path.display(),
                    path.display()
                ))
            }
            Input::Help => Ok(self.help()),
        }
    }

    /// `/load`: the conversation (and any weights, divergence and temperature) of a file
    /// written by `/save`, checked before anything changes.
    fn load(&mut self, path: &std::path::Path) -> Result<String> {
        let text = crate::input::read_text(path, "conversation")?;
        let saved: Saved = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a conversation written by /save ({e})", path.display())
        })?;
        for m in &saved.messages {
            if m.role != "user" && m.role != "assistant" {
                bail!(
                    "{}: a message has role '{}'; a saved conversation holds user and assistant turns",
                    path.display(),
                    m.role
                );
            }
        }
        let mut recipe = self.recipe.clone();
        if let Some(d) = &saved.divergence {
            recipe.divergence = d.parse()?;
        }
        if let Some(w) = saved.weights {
            recipe.set_weights(w)?;
        }
        recipe.apply_weight_rules(false)?;
        recipe.terms()?;
        let mut sampling = self.settings.sampling.clone();
        if let Some(t) = saved.temperature {
            sampling.temperature = t;
            sampling.check()?;
        }
        self.recipe = recipe;
        self.settings.sampling = sampling;
        self.messages = saved.messages;
        Ok(format!(
            "loaded {} messages from {}; {}, divergence {}, temperature {}",
            self.messages.len(),
            path.display(),
            self.weights_line(),
            self.recipe.divergence,
            self.settings.sampling.temperature
        ))
    }

    /// The recipe as it stands: current weights, divergence and temperature, each policy's
    /// template as this chat applies it, and absolute file paths (usable from any folder).
    fn recipe_now(&self) -> Result<Recipe> {
        let mut r = self.recipe.clone();
        r.temperature = Some(self.settings.sampling.temperature);
        let absolute = |p: &std::path::Path| -> Result<PathBuf> {
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
        };
        for p in r.reference.iter_mut().chain(r.experts.iter_mut()) {
            p.model = absolute(&p.model)?;
            if let Some((lora, _)) = &mut p.lora {
                *lora = absolute(lora)?;
            }
            p.template.get_or_insert_with(|| self.template.clone());
        }
        Ok(r)
    }

    fn expert_names(&self) -> String {
        self.recipe.experts.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// `weights poet=0.5 scientist=0.5`.
    fn weights_line(&self) -> String {
        let pairs: Vec<String> = self
            .recipe
            .experts
            .iter()
            .zip(&self.recipe.weights)
            .map(|(e, w)| format!("{}={w}", e.name))
            .collect();
        format!("weights {}", pairs.join(" "))
    }

    /// `/help`: the experts, the current settings, the commands.
    fn help(&self) -> String {
        let mut out = String::from("experts:\n");
        for (e, w) in self.recipe.experts.iter().zip(&self.recipe.weights) {
            let what = e
                .system
                .as_deref()
                .or((!e.prefix.is_empty()).then_some(e.prefix.as_str()))
                .map(|t| t.trim().replace('\n', " "))
                .unwrap_or_else(|| e.model.display().to_string());
            let what: String = if what.chars().count() > 60 {
                what.chars().take(59).chain(['…']).collect()
            } else {
                what
            };
            out.push_str(&format!("  {:<12} weight {w:<6} {what}\n", e.name));
        }
        let s = &self.settings.sampling;
        out.push_str(&format!(
            "divergence {}, temperature {}, max tokens {}, reference {}, {} messages so far\n{COMMANDS}",
            self.recipe.divergence,
            s.temperature,
            self.settings.max_tokens,
            if self.recipe.reference.is_some() { "yes" } else { "none" },
            self.messages.len()
        ));
        out
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
        let prompts = self.engine.chat_tokens(&self.messages, &self.template, None)?;
        cancel.store(false, Ordering::SeqCst);
        if let Some(bytes) = self.bytes.as_mut() {
            let generation =
                bytes.generate(&self.recipe, prompts, &self.settings, true, &mut |text| {
                    on_text(text);
                    if cancel.swap(false, Ordering::SeqCst) {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    }
                })?;
            return Ok(Reply { reused_tokens: generation.cached_tokens, generation });
        }
        let request = Request::new(self.recipe.clone(), self.settings.clone(), prompts, true);
        self.decoder.submit(0, request)?;
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
            Some(Input::Weights(Some(WeightChange::All(vec![0.2, 0.8]))))
        );
        assert_eq!(Input::parse("/weights").unwrap(), Some(Input::Weights(None)));
        assert_eq!(
            Input::parse("/weights playful=1, concise=-0.5 x=2").unwrap(),
            Some(Input::Weights(Some(WeightChange::Named(vec![
                ("playful".into(), 1.0),
                ("concise".into(), -0.5),
                ("x".into(), 2.0)
            ]))))
        );
        assert_eq!(
            Input::parse("/divergence jsd").unwrap(),
            Some(Input::Divergence(Some("jsd".into())))
        );
        assert_eq!(Input::parse("/divergence").unwrap(), Some(Input::Divergence(None)));
        assert_eq!(Input::parse("/temperature 0.7").unwrap(), Some(Input::Temperature(Some(0.7))));
        assert_eq!(Input::parse("/temperature").unwrap(), Some(Input::Temperature(None)));
        assert_eq!(Input::parse("/reset").unwrap(), Some(Input::Reset));
        assert_eq!(Input::parse("/save a.json").unwrap(), Some(Input::Save("a.json".into())));
        assert_eq!(Input::parse("/load a.json").unwrap(), Some(Input::Load("a.json".into())));
        assert_eq!(
            Input::parse("/save-recipe r.toml").unwrap(),
            Some(Input::SaveRecipe("r.toml".into()))
        );
        assert_eq!(Input::parse("/help").unwrap(), Some(Input::Help));
        for quit in ["/quit", "/exit", " /quit  "] {
            assert_eq!(Input::parse(quit).unwrap(), Some(Input::Quit), "{quit}");
        }
        for bad in [
            "/weights x",
            "/weights a=1 0.5",
            "/weights a=x",
            "/weights a=nan",
            "/temperature hot",
            "/save",
            "/load",
            "/save-recipe",
            "/frobnicate",
        ] {
            assert!(Input::parse(bad).is_err(), "{bad}");
        }
    }
}
