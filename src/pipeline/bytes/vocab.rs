//! A vocabulary seen as byte strings: the text tokens sorted by their bytes, so that the
//! tokens whose bytes start with a given string form one run of the order, found by binary
//! search.

use std::ops::Range;

/// A model's tokens as byte strings.
///
/// A *text token* has at least one byte and does not end generation; the others are the
/// end-of-generation tokens and the tokens that stand for no text (control tokens).
#[derive(Debug, Clone)]
pub struct ByteVocab {
    /// Text tokens' ids, sorted by their bytes (ties by id).
    ids: Vec<u32>,
    /// Their bytes, concatenated in the same order; `starts[r]..starts[r + 1]` is rank `r`'s.
    bytes: Vec<u8>,
    starts: Vec<usize>,
    /// For each token id, its rank in the order (`u32::MAX`: not a text token).
    rank: Vec<u32>,
    eog: Vec<u32>,
    longest: usize,
}

impl ByteVocab {
    /// A vocabulary from each token's bytes (index = token id) and whether it ends
    /// generation. Tokens with no bytes that do not end generation are control tokens: they
    /// are never part of a text.
    pub fn new(pieces: Vec<Vec<u8>>, is_eog: impl Fn(u32) -> bool) -> Self {
        let n = pieces.len();
        let eog: Vec<u32> = (0..n as u32).filter(|&t| is_eog(t)).collect();
        let mut ids: Vec<u32> =
            (0..n as u32).filter(|&t| !pieces[t as usize].is_empty() && !is_eog(t)).collect();
        ids.sort_by(|&a, &b| pieces[a as usize].cmp(&pieces[b as usize]).then(a.cmp(&b)));
        let mut bytes = Vec::new();
        let mut starts = Vec::with_capacity(ids.len() + 1);
        let mut rank = vec![u32::MAX; n];
        for (r, &t) in ids.iter().enumerate() {
            starts.push(bytes.len());
            bytes.extend_from_slice(&pieces[t as usize]);
            rank[t as usize] = r as u32;
        }
        starts.push(bytes.len());
        let longest = ids.iter().map(|&t| pieces[t as usize].len()).max().unwrap_or(0);
        Self { ids, bytes, starts, rank, eog, longest }
    }

    /// Token ids the model has (text or not).
    pub fn n_vocab(&self) -> usize {
        self.rank.len()
    }

    /// Number of text tokens.
    pub fn n_text(&self) -> usize {
        self.ids.len()
    }

    /// The most bytes a token has.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The end-of-generation tokens.
    pub fn eog(&self) -> &[u32] {
        &self.eog
    }

    /// The bytes of the token of rank `r`.
    pub fn piece_at(&self, r: usize) -> &[u8] {
        &self.bytes[self.starts[r]..self.starts[r + 1]]
    }

    /// The id of the token of rank `r`.
    pub fn token_at(&self, r: usize) -> u32 {
        self.ids[r]
    }

    /// The rank of a text token (`None` for the others and for ids out of range).
    pub fn rank_of(&self, token: u32) -> Option<usize> {
        self.rank.get(token as usize).filter(|&&r| r != u32::MAX).map(|&r| r as usize)
    }

    /// The ranks of the text tokens whose bytes start with `prefix` (every token for an empty
    /// prefix).
    pub fn starting_with(&self, prefix: &[u8]) -> Range<usize> {
        let all = 0..self.ids.len();
        let lo = partition(all.clone(), |r| self.piece_at(r) < prefix);
        let hi = partition(all, |r| {
            let p = self.piece_at(r);
            p < prefix || p.starts_with(prefix)
        });
        lo..hi
    }

    /// The ranks of the text tokens whose bytes are exactly `bytes`.
    pub fn equal_to(&self, bytes: &[u8]) -> Range<usize> {
        let run = self.starting_with(bytes);
        let end = run.start + partition(run.clone(), |r| self.piece_at(r).len() == bytes.len());
        run.start..end
    }

    /// Splits `run`, the ranks of the tokens starting with `prefix`, by the byte that follows
    /// `prefix`: calls `each(byte, ranks)` for every byte some token has there, in increasing
    /// order. Tokens equal to `prefix` (first in the run) are skipped.
    pub fn by_next_byte(
        &self,
        prefix: &[u8],
        run: Range<usize>,
        mut each: impl FnMut(u8, Range<usize>),
    ) {
        let at = prefix.len();
        let mut i = run.start + partition(run.clone(), |r| self.piece_at(r).len() == at);
        while i < run.end {
            let x = self.piece_at(i)[at];
            let j = i + partition(i..run.end, |r| self.piece_at(r)[at] <= x);
            each(x, i..j);
            i = j;
        }
    }
}

/// The number of leading elements of `range` for which `pred` holds (it must hold for a
/// leading part and then never).
fn partition(range: Range<usize>, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo - range.start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[&str]) -> ByteVocab {
        let pieces = pieces.iter().map(|p| p.as_bytes().to_vec()).collect();
        ByteVocab::new(pieces, |t| t == 0)
    }

    #[test]
    fn runs_of_tokens_by_their_start_equal_a_scan() {
        let v = vocab(&["</s>", "a", "ab", "abc", "b", "ba", "", "a", "c", "abd", "bb", "ac"]);
        assert_eq!(v.n_text(), 10, "the end token and the empty control token are not text");
        assert_eq!(v.longest(), 3);
        assert_eq!(v.eog(), [0]);
        for prefix in ["", "a", "ab", "abc", "abcd", "b", "c", "d", "ad", "ac"] {
            let run = v.starting_with(prefix.as_bytes());
            let scan: Vec<usize> =
                (0..v.n_text()).filter(|&r| v.piece_at(r).starts_with(prefix.as_bytes())).collect();
            assert_eq!(run.clone().collect::<Vec<_>>(), scan, "{prefix:?}");
            let equal: Vec<usize> =
                (0..v.n_text()).filter(|&r| v.piece_at(r) == prefix.as_bytes()).collect();
            assert_eq!(v.equal_to(prefix.as_bytes()).collect::<Vec<_>>(), equal, "{prefix:?}");
            let mut seen = Vec::new();
            v.by_next_byte(prefix.as_bytes(), run, |x, r| {
                for i in r {
                    assert_eq!(v.piece_at(i)[prefix.len()], x);
                    seen.push(i);
                }
            });
            let longer: Vec<usize> =
                scan.into_iter().filter(|&r| v.piece_at(r).len() > prefix.len()).collect();
            assert_eq!(seen, longer, "{prefix:?}");
        }
        // Two tokens with the same bytes (a byte token and a piece, say) both count.
        assert_eq!(v.equal_to(b"a").len(), 2);
        assert_eq!(v.rank_of(0), None);
        assert_eq!(v.rank_of(6), None);
        assert_eq!(v.piece_at(v.rank_of(3).unwrap()), b"abc");
        assert_eq!(v.token_at(v.rank_of(9).unwrap()), 9);
    }
}
