//! Log-probabilities of generated tokens: of the combined distribution a token was drawn
//! from, its most likely alternatives, and each policy's own.
//!
//! Pure Rust. The combined distribution here is the softmax of the scores the sampler drew
//! from — after the logit bias, the penalties and the constraint, before top-k, top-p, min-p
//! and the temperature — so the numbers do not depend on the truncation settings.

use super::combine::logsumexp;
use super::sample::top_k_into;

/// The most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A token, its bytes, and its log-probability in the combined distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub token: u32,
    /// The bytes the token stands for (possibly part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One generated token's log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub chosen: Alternative,
    /// The most likely tokens of the combined distribution, most likely first.
    pub top: Vec<Alternative>,
    /// Each policy's own log-probability of the chosen token, in the order the generation
    /// lists the policies it ran.
    pub policies: Vec<f32>,
}

/// `token`'s log-probability under softmax(`scores`) and the `top_n` most likely tokens.
/// With a constraint, `allowed` holds the allowed tokens that carry the mass (best first;
/// see [`super::sample::allowed_window`]) and the distribution is theirs.
pub fn combined(
    scores: &[f32],
    allowed: Option<&[(u32, f32)]>,
    token: u32,
    top_n: usize,
    scratch: &mut Vec<(u32, f32)>,
) -> (f32, Vec<(u32, f32)>) {
    let (lse, top): (f64, &[(u32, f32)]) = match allowed {
        Some(list) => {
            let values: Vec<f32> = list.iter().map(|x| x.1).collect();
            (logsumexp(&values), &list[..top_n.min(list.len())])
        }
        None => {
            scratch.clear();
            if top_n > 0 {
                top_k_into(scores, top_n.min(scores.len()), scratch);
                scratch.retain(|x| x.1 > f32::NEG_INFINITY);
                scratch.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            }
            (logsumexp(scores), &scratch[..])
        }
    };
    let lp = |s: f32| (f64::from(s) - lse) as f32;
    let own = scores.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
    (lp(own), top.iter().map(|&(t, s)| (t, lp(s))).collect())
}

/// `token`'s log-probability under one policy's `logits` (over the first `n` tokens).
pub fn of_policy(logits: &[f32], n: usize, token: u32) -> f32 {
    let n = n.min(logits.len());
    let own = logits.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
    (f64::from(own) - logsumexp(&logits[..n])) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_the_log_softmax_and_top_is_sorted() {
        let scores = [1.0f32, 3.0, f32::NEG_INFINITY, 2.0];
        let z: f64 = scores.iter().map(|&s| f64::from(s).exp()).sum();
        let (lp, top) = combined(&scores, None, 3, 2, &mut Vec::new());
        assert!((f64::from(lp) - (2.0 - z.ln())).abs() < 1e-6);
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((f64::from(top[0].1) - (3.0 - z.ln())).abs() < 1e-6);
        let (none, _) = combined(&scores, None, 2, 0, &mut Vec::new());
        assert_eq!(none, f32::NEG_INFINITY);
        let (big, top) = combined(&scores, None, 0, 50, &mut Vec::new());
        assert_eq!(top.len(), 3, "only tokens with a probability");
        assert!(big < 0.0);
    }

    #[test]
    fn constrained_logprobs_renormalise_over_the_allowed() {
        let scores = [1.0f32, 3.0, 0.5, 2.0];
        let allowed = [(3u32, 2.0f32), (0, 1.0)];
        let z = 2f64.exp() + 1f64.exp();
        let (lp, top) = combined(&scores, Some(&allowed), 0, 5, &mut Vec::new());
        assert!((f64::from(lp) - (1.0 - z.ln())).abs() < 1e-6);
        assert_eq!(top.len(), 2);
        let mass: f64 = top.iter().map(|x| f64::from(x.1).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_policys_logprob_is_its_own_log_softmax() {
        let l = [0.0f32, 1.0, 2.0, 50.0];
        let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|x| x.exp()).sum();
        assert!((f64::from(of_policy(&l, 3, 1)) - (1.0 - z.ln())).abs() < 1e-6);
    }
}
