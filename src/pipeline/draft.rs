//! Drafts for speculative decoding: tokens guessed to come next, which the policies then
//! check all at once, in one pass per context (see the decoder).
//!
//! The guess is prompt lookup: the latest few tokens (four or five: shorter runs repeat by
//! chance too often to pay for the check), found earlier in the prompt or in the
//! text so far, are likely followed by what followed them there (a summary quotes its source,
//! code repeats its names, a list repeats its shape). No model runs for it. How many tokens
//! are drafted adapts to how many were accepted, and drafting pauses after drafts that were
//! all rejected, so text with nothing to look up costs (almost) nothing extra.

/// The most draft tokens per pass unless told otherwise.
pub const DEFAULT_DRAFT_MAX: usize = 16;

/// The longest and shortest run of latest tokens looked up.
pub const NGRAM_MAX: usize = 5;
pub const NGRAM_MIN: usize = 4;

/// The length of a stream's first draft: a pass checking a long draft costs several plain
/// steps on a CPU, so drafts grow only as they are accepted.
const FIRST_DRAFT: usize = 2;

/// The most steps drafting pauses after drafts that were all rejected.
const MAX_PAUSE: usize = 16;

/// Appends to `out` up to `max` tokens that followed the latest earlier occurrence of the
/// longest suffix of `context` (from [`NGRAM_MAX`] down to [`NGRAM_MIN`] tokens) found in it.
pub fn lookup(context: &[u32], max: usize, out: &mut Vec<u32>) {
    if max == 0 {
        return;
    }
    for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
        if context.len() <= n {
            continue;
        }
        let pattern = &context[context.len() - n..];
        // Latest first: the most recent context is the likeliest to repeat.
        let found =
            (0..context.len() - n).rev().find(|&start| &context[start..start + n] == pattern);
        if let Some(start) = found {
            let from = start + n;
            let end = (from + max).min(context.len());
            out.extend_from_slice(&context[from..end]);
            return;
        }
    }
}

/// How many tokens the next draft may have: `FIRST_DRAFT` at first, doubling up to the
/// maximum while drafts are accepted whole, one more than the last accepted run after a
/// partial rejection, and none for a while (doubling up to `MAX_PAUSE` steps) after a
/// draft that was rejected outright.
#[derive(Debug, Clone)]
pub struct DraftLength {
    max: usize,
    current: usize,
    /// Steps left without drafting, and the length of the next pause.
    paused: usize,
    pause: usize,
}

impl DraftLength {
    pub fn new(max: usize) -> Self {
        Self { max, current: max.min(FIRST_DRAFT), paused: 0, pause: 1 }
    }

    /// The length of this step's draft (0: no draft this step).
    pub fn take(&mut self) -> usize {
        if self.paused > 0 {
            self.paused -= 1;
            return 0;
        }
        self.current
    }

    /// Learns from a draft of `drafted` tokens of which the first `accepted` were taken.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        if accepted == 0 {
            self.paused = self.pause;
            self.pause = (self.pause * 2).min(MAX_PAUSE);
            self.current = 1.max(self.current / 2);
            return;
        }
        self.pause = 1;
        self.current = if accepted == drafted {
            (self.current * 2).min(self.max)
        } else {
            (accepted + 1).min(self.max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafted(context: &[u32], max: usize) -> Vec<u32> {
        let mut out = Vec::new();
        lookup(context, max, &mut out);
        out
    }

    /// The same lookup written the slow, obvious way: every earlier occurrence of every
    /// suffix length, longest first, latest first.
    fn brute_force(context: &[u32], max: usize) -> Vec<u32> {
        for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
            if context.len() <= n {
                continue;
            }
            let suffix = context[context.len() - n..].to_vec();
            let starts: Vec<usize> =
                (0..context.len() - n).filter(|&s| context[s..s + n] == suffix[..]).collect();
            if let Some(&s) = starts.iter().max() {
                return context[s + n..].iter().take(max).copied().collect();
            }
        }
        Vec::new()
    }

    #[test]
    fn a_repeated_run_is_continued_as_before() {
        // "a b c d e f | a b c d" → "e f a b c d" is what followed "a b c d" last time.
        let context = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4];
        assert_eq!(drafted(&context, 3), [5, 6, 1]);
        assert_eq!(drafted(&context, 10), [5, 6, 1, 2, 3, 4]);
        assert_eq!(drafted(&context, 0), Vec::<u32>::new());
        // The latest occurrence wins, and the longest suffix before shorter ones.
        assert_eq!(drafted(&[7, 8, 9, 6, 1, 7, 8, 9, 6, 2, 7, 8, 9, 6], 1), [2]);
        assert_eq!(drafted(&[5, 1, 2, 3, 4, 9, 6, 1, 2, 3, 4, 8, 5, 1, 2, 3, 4], 1), [9]);
        // Nothing repeats, or only runs shorter than NGRAM_MIN: no draft.
        assert!(drafted(&[1, 2, 3, 4, 5, 6], 4).is_empty());
        assert!(drafted(&[1, 2, 3, 9, 1, 2, 3], 4).is_empty());
        assert!(drafted(&[], 4).is_empty());
    }

    #[test]
    fn lookup_equals_brute_force_on_random_contexts() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let alphabet = 2 + next() % 5;
            let context: Vec<u32> = (0..len).map(|_| (next() % alphabet) as u32).collect();
            let max = (next() % 8) as usize;
            assert_eq!(drafted(&context, max), brute_force(&context, max), "{context:?} {max}");
        }
    }

    #[test]
    fn draft_length_grows_with_acceptance_and_pauses_after_misses() {
        let mut d = DraftLength::new(8);
        assert_eq!(d.take(), FIRST_DRAFT);
        d.update(2, 2);
        assert_eq!(d.take(), 4);
        d.update(4, 4);
        assert_eq!(d.take(), 8);
        d.update(8, 3);
        assert_eq!(d.take(), 4, "one more than the accepted run");
        d.update(4, 4);
        assert_eq!(d.take(), 8, "doubles while every token is taken, up to the maximum");
        d.update(8, 8);
        assert_eq!(d.take(), 8);
        // A draft rejected outright: one step without, then two, then four…
        d.update(8, 0);
        assert_eq!((d.take(), d.take()), (0, 4));
        d.update(4, 0);
        assert_eq!((d.take(), d.take(), d.take()), (0, 0, 2));
        for _ in 0..10 {
            d.update(2, 0);
            while d.take() == 0 {}
        }
        d.update(1, 0);
        let pause = std::iter::from_fn(|| Some(d.take())).take_while(|&n| n == 0).count();
        assert_eq!(pause, MAX_PAUSE, "the pause is bounded");
        // An accepted token ends the pauses' growth.
        d.update(1, 1);
        d.update(2, 0);
        assert_eq!((d.take(), d.take()), (0, 1));
        // No draft, nothing learnt.
        let before = format!("{d:?}");
        d.update(0, 0);
        assert_eq!(format!("{d:?}"), before);
    }
}
