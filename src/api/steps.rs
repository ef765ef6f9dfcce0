//! [`Steps`]: decoding in the caller's hands, for combinations of the caller's own.

use crate::error::{Error, Result};
use crate::pipeline::combine::log_softmax;
use crate::pipeline::decode::FinishReason;
use crate::pipeline::engine::{Engine, Session as EngineSession, SessionOptions, Strategy};
use llama_cpp_2::token::LlamaToken;
use std::sync::Arc;

/// Step-by-step decoding of one prompt by every policy of the recipe (reference first):
/// at each step [`Steps::logprobs`] holds each policy's next-token log-probabilities over the
/// vocabulary the policies share, and [`Steps::choose`] feeds the caller's token to every
/// policy. Made by [`super::Session::steps`].
///
/// ```no_run
/// # fn main() -> mood::Result<()> {
/// # let mood = mood::Mood::load(mood::Recipe::from_file("models/demo.toml")?, Default::default())?;
/// let mut session = mood.session();
/// let mut steps = session.steps("The ocean", 32)?;
/// while !steps.is_done() {
///     // A combination of one's own: here the policies' mean log-probability, greedily.
///     let lp = steps.logprobs();
///     let mean = |v: usize| lp.iter().map(|p| p[v]).sum::<f32>();
///     let best = (0..lp[0].len()).max_by(|&a, &b| mean(a).total_cmp(&mean(b))).unwrap();
///     steps.choose(best as u32)?;
/// }
/// println!("{}", steps.text());
/// # Ok(())
/// # }
/// ```
pub struct Steps {
    engine: Arc<Engine>,
    session: EngineSession,
    logprobs: Vec<Vec<f32>>,
    tokens: Vec<u32>,
    bytes: Vec<u8>,
    piece: Vec<u8>,
    max_tokens: usize,
    finish: Option<FinishReason>,
}

impl Steps {
    pub(super) fn start(
        engine: Arc<Engine>,
        prompt: &str,
        max_tokens: usize,
        options: SessionOptions,
    ) -> anyhow::Result<Self> {
        if max_tokens == 0 {
            return Err(crate::error::invalid("max_tokens", "must be at least 1, got 0"));
        }
        let members: Vec<usize> = (0..engine.policies().len()).collect();
        // Each policy's own logits are needed: a context per policy, or one per model file.
        let strategy = match options.strategy {
            Strategy::Mixed | Strategy::Auto => Strategy::Batched,
            s => s,
        };
        let mut session =
            engine.open_session(&members, 1, SessionOptions { strategy, ..options })?;
        let prompts: Vec<Option<Vec<LlamaToken>>> =
            engine.prompt_tokens(prompt)?.into_iter().map(Some).collect();
        session.prefill_lane(0, &prompts, false, None)?;
        let mut steps = Self {
            engine,
            session,
            logprobs: vec![Vec::new(); members.len()],
            tokens: Vec::new(),
            bytes: Vec::new(),
            piece: Vec::new(),
            max_tokens,
            finish: None,
        };
        steps.normalise();
        Ok(steps)
    }

    /// The policies' names, in the order of [`Steps::logprobs`].
    pub fn policies(&self) -> Vec<&str> {
        self.engine.policies().iter().map(|p| p.name.as_str()).collect()
    }

    /// Each policy's log-probabilities of the next token, indexed by token id over the
    /// vocabulary the policies share.
    pub fn logprobs(&self) -> &[Vec<f32>] {
        &self.logprobs
    }

    /// Whether the generation has ended (an end-of-generation token was chosen, the token
    /// limit or the context's end was reached).
    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// Feeds `token` to every policy and computes the next log-probabilities. Returns
    /// whether decoding goes on.
    pub fn choose(&mut self, token: u32) -> Result<bool> {
        if self.finish.is_some() {
            return Err(Error::Engine {
                message: "the generation has ended; start another".into(),
            });
        }
        let n = self.engine.n_common_vocab();
        if token as usize >= n {
            return Err(crate::error::SettingError::new(
                "token",
                format!("must be below the shared vocabulary's size {n}, got {token}"),
            )
            .into());
        }
        if self.engine.is_eog(token) {
            self.finish = Some(FinishReason::Eog);
            return Ok(false);
        }
        self.tokens.push(token);
        self.engine.piece(token, &mut self.piece);
        self.bytes.extend_from_slice(&self.piece);
        if self.tokens.len() >= self.max_tokens || self.session.room_in(0) == 0 {
            self.finish = Some(FinishReason::Length);
            return Ok(false);
        }
        self.session.step(&[Some(LlamaToken(token as i32))]).map_err(Error::from_chain)?;
        self.normalise();
        Ok(true)
    }

    /// The text of the tokens chosen so far (bytes that are not UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The tokens chosen so far (an end-of-generation token is not included).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Why decoding ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    fn normalise(&mut self) {
        let n = self.engine.n_common_vocab();
        for (k, out) in self.logprobs.iter_mut().enumerate() {
            out.clear();
            out.extend_from_slice(&self.session.logits_in(k, 0)[..n]);
            log_softmax(out);
        }
    }
}
