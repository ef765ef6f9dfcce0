//! One lane's part of a step: the positions its last pass decoded, taken one at a time, and
//! what it feeds next.
//!
//! A pass feeds a lane its last token and, when speculating, a draft of tokens guessed to
//! follow it; the policies return logits after each. Position by position, the lane combines
//! the policies' logits and picks a token exactly as an unspeculative step would (same
//! combination, penalties, constraint, random draw). While the pick equals the draft token
//! fed after that position, the next position's logits are the ones an unspeculative step
//! would have computed, and the lane goes on; at the first difference it keeps its pick and
//! drops the rest of the draft from the caches. The output is therefore the unspeculative
//! output: for greedy decoding trivially; for sampling because drawing from the MOD
//! distribution p and accepting when the draw equals the draft token d accepts d with
//! probability p(d) and otherwise yields a draw from p without d, renormalised — the
//! speculative-sampling rule for a draft that is one token for sure.
//!
//! Whether the next pass carries a draft, and how long, is decided here from what was
//! measured (see the draft module for the rule): the lane looks its latest tokens up in its
//! prompt and output (free: no model runs) and drafts at most what the lookup found, within
//! the request's maximum, the pass's and the context's room and the tokens still wanted; of
//! that, it drafts the length that promises the most tokens per second given the request's
//! acceptance rate so far and the session's measured cost of passes of each width — nothing
//! when no length beats plain steps, except a short draft now and then to keep both
//! measures current. With a draft model the length is chosen first, counting the model's
//! measured time per proposed token, and the model proposes only when a draft is chosen; its
//! time is measured here.

use super::stream::{Next, Stream};
use super::{Event, FinishReason, Flow, Sink};
use crate::pipeline::draft;
use crate::pipeline::engine::{Drafter, Session};
use anyhow::Result;
use llama_cpp_2::token::LlamaToken;
use std::time::Instant;

/// A request in a lane.
pub(super) struct Lane<'e> {
    pub(super) tag: u64,
    pub(super) stream: Stream<'e>,
    /// Where the request's combiner terms sit in the session, in term order.
    pub(super) slots: Vec<usize>,
}

/// How a lane's step ended.
pub(super) enum Advanced {
    /// It goes on: the caller feeds what was written to the feed and the drop.
    Fed,
    Finished(FinishReason),
    Failed(anyhow::Error),
}

/// The lane's logits of the last pass and the limits of the next one.
pub(super) struct Pass<'p, 'e> {
    pub(super) session: &'p mut Session,
    /// The draft model's context; prompt lookup drafts without one.
    pub(super) drafter: Option<&'p mut Drafter<'e>>,
    /// What the session's passes cost by width, and the draft model per proposed token.
    pub(super) costs: &'p mut draft::PassCosts,
    pub(super) lane: usize,
    pub(super) n_vocab: usize,
}

impl Lane<'_> {
    /// Takes the positions of the lane's last pass (see the module documentation), telling
    /// the sink each token; writes the tokens to feed next to `feed` and how many cached
    /// tokens to drop first to `drop`. Only a sink error is returned.
    pub(super) fn advance(
        &mut self,
        pass: &mut Pass<'_, '_>,
        combined: &mut [f32],
        sink: &mut Sink<'_>,
        feed: &mut Vec<LlamaToken>,
        drop: &mut usize,
    ) -> Result<Advanced> {
        let room = pass.session.room_in(pass.lane);
        let draft = std::mem::take(&mut self.stream.speculation.draft);
        let mut outcome = Advanced::Finished(FinishReason::Length);
        let mut position = 0;
        for i in 0..=draft.len() {
            position = i;
            let next = self.pick_at(pass, combined, i).and_then(|n| self.stream.accept(n));
            let stream = &mut self.stream;
            let token = match next {
                Err(e) => {
                    outcome = Advanced::Failed(e);
                    break;
                }
                Ok(Next::End | Next::Rescore) => {
                    outcome = Advanced::Finished(FinishReason::Eog);
                    break;
                }
                Ok(Next::Token(token)) => token,
            };
            stream.engine.piece(token, &mut stream.piece);
            let pushed = stream.text.push(&stream.piece);
            let logprob = stream.logprobs.list.last().filter(|_| stream.logprobs.top.is_some());
            let flow = sink(self.tag, Event::Token { token, text: pushed.emit, logprob })?;
            stream.speculation.lookup.push(token);
            let matched = draft.get(i) == Some(&token);
            // The cache's free cells once the draft after this position is dropped.
            let free = room + (draft.len() - i);
            let finish = if flow == Flow::Stop {
                Some(FinishReason::Cancelled)
            } else if pushed.stopped {
                Some(FinishReason::Stop)
            } else if stream.tokens.len() >= stream.max_tokens || free == 0 {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = finish {
                stream.speculated(draft.len(), i + usize::from(matched));
                return Ok(Advanced::Finished(reason));
            }
            if matched {
                continue;
            }
            stream.speculated(draft.len(), i);
            *drop = draft.len() - i;
            feed.push(LlamaToken(token as i32));
            // Guess what follows, within the pass's and the context's room and the tokens
            // still wanted, as long as it pays (see the module documentation).
            let wanted = stream.max_tokens - stream.tokens.len() - 1;
            let room = pass.session.tokens_per_step().min(free) - 1;
            let limit = stream.speculation.draft_max.min(room).min(wanted);
            let (spec, costs) = (&mut stream.speculation, &mut *pass.costs);
            let mut next_draft = draft;
            next_draft.clear();
            match pass.drafter.as_mut() {
                Some(d) => {
                    let n = spec.choice.take(limit, costs);
                    if n > 0 {
                        let started = Instant::now();
                        match d.propose(pass.lane, &spec.lookup, n, &mut next_draft) {
                            Ok(()) => costs
                                .record_proposal(next_draft.len(), started.elapsed().as_secs_f64()),
                            // A draft model that fails costs this step its draft, nothing more.
                            Err(_) => next_draft.clear(),
                        }
                    }
                }
                None => {
                    draft::lookup(&spec.lookup, limit, &mut next_draft);
                    let n = spec.choice.take(next_draft.len(), costs);
                    next_draft.truncate(n);
                }
            }
            feed.extend(next_draft.iter().map(|&t| LlamaToken(t as i32)));
            stream.speculation.draft = next_draft;
            return Ok(Advanced::Fed);
        }
        self.stream.speculated(draft.len(), position);
        Ok(outcome)
    }

    /// Combines and picks at position `i` of the lane's last pass.
    fn pick_at(&mut self, pass: &mut Pass<'_, '_>, combined: &mut [f32], i: usize) -> Result<Next> {
        let stream = &mut self.stream;
        // The session's mixed logits are already the combination: sampled where they are
        // (the buffer is the lane's until the next pass); otherwise combine first.
        if let Some(mixed) = pass.session.mixed_logits_mut_at(pass.lane, i) {
            stream.clock.mixed_steps += 1;
            let n = pass.n_vocab.min(mixed.len());
            return stream.pick(&mut mixed[..n]);
        }
        let (session, lane, slots) = (&*pass.session, pass.lane, &self.slots);
        let logits = |k: usize| session.logits_at(k, lane, i);
        stream.prepare_logprobs(slots, logits);
        stream.combine(slots, logits, combined, stream.whole_first());
        let mut next = stream.pick(combined);
        if let Ok(Next::Rescore) = next {
            stream.combine(slots, logits, combined, true);
            next = stream.pick(combined);
        }
        if let Ok(Next::Token(token)) = next {
            stream.record_logprobs(token, combined, slots, logits);
        }
        next
    }
}
