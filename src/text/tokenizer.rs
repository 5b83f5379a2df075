//! A tiktoken-compatible byte-level BPE tokenizer, as fish-speech's `FishTokenizer` uses it.
//!
//! - ranks come from `tokenizer.tiktoken` (`base64(token) rank` per line);
//! - special tokens (names → ids from the manifest) are matched first, all of them allowed,
//!   like tiktoken's `encode(allowed_special=all)`;
//! - the text between them is split by the bundle's pre-tokenizer pattern
//!   (fish-speech's `FISH_TIKTOKEN_PATTERN`; its `\s+(\?!\S)` alternative is a literal `?!`, not a
//!   lookahead, so the `regex` crate runs it unchanged);
//! - each piece is a direct rank or is merged by tiktoken's `_byte_pair_merge`;
//! - the text is cut into chunks of `max_encode_chars` code points first, as `FishTokenizer.encode`.

use std::collections::HashMap;

use base64::Engine as _;
use regex::Regex;

use crate::error::{Error, Result};

/// A token id (row of the embedding table).
pub type TokenId = u32;

/// The BPE tokenizer of a bundle.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    ranks: HashMap<Vec<u8>, TokenId>,
    special: HashMap<String, TokenId>,
    pattern: Regex,
    special_pattern: Option<Regex>,
    max_encode_chars: usize,
}

impl Tokenizer {
    /// Builds a tokenizer from its parts.
    ///
    /// `file` names the ranks file in errors; `max_encode_chars` is the chunk length in code
    /// points (fish-speech: 400 000).
    pub fn new(
        ranks: HashMap<Vec<u8>, TokenId>,
        special: HashMap<String, TokenId>,
        pattern: &str,
        max_encode_chars: usize,
    ) -> Result<Self> {
        let pattern = Regex::new(pattern).map_err(|e| {
            Error::bundle("manifest.json", "tokenizer.pattern", format!("not a valid regex: {e}"))
        })?;
        if special.contains_key("") {
            // An empty name matches at every position: encoding would never advance.
            return Err(Error::bundle(
                "manifest.json",
                "tokens.special",
                "a special token has an empty name",
            ));
        }
        let special_pattern = if special.is_empty() {
            None
        } else {
            // Longest first so that, should one special token prefix another, the longer wins.
            let mut names: Vec<&String> = special.keys().collect();
            names.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
            let alt: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
            Some(Regex::new(&alt.join("|")).map_err(|e| {
                Error::bundle(
                    "manifest.json",
                    "tokens.special",
                    format!("cannot build matcher: {e}"),
                )
            })?)
        };
        if max_encode_chars == 0 {
            return Err(Error::bundle(
                "manifest.json",
                "tokenizer.max_encode_chars",
                "must be > 0",
            ));
        }
        Ok(Self { ranks, special, pattern, special_pattern, max_encode_chars })
    }

    /// Parses a `.tiktoken` ranks file (`base64 rank` per line); `file` names it in errors.
    pub fn parse_ranks(text: &str, file: &str) -> Result<HashMap<Vec<u8>, TokenId>> {
        let mut ranks = HashMap::with_capacity(text.len() / 12);
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let field = format!("line {}", n + 1);
            let mut it = line.split_whitespace();
            let (Some(tok), Some(rank), None) = (it.next(), it.next(), it.next()) else {
                return Err(Error::bundle(file, &field, "expected `<base64 token> <rank>`"));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(tok)
                .map_err(|e| Error::bundle(file, &field, format!("bad base64: {e}")))?;
            let rank: TokenId =
                rank.parse().map_err(|e| Error::bundle(file, &field, format!("bad rank: {e}")))?;
            ranks.insert(bytes, rank);
        }
        Ok(ranks)
    }

    /// Number of BPE ranks (ids below this are ordinary tokens).
    pub fn num_ranks(&self) -> usize {
        self.ranks.len()
    }

    /// Id of a special token by name, e.g. `<|im_end|>`.
    pub fn special_id(&self, name: &str) -> Option<TokenId> {
        self.special.get(name).copied()
    }

    /// Encodes `text` exactly as fish-speech's `FishTokenizer.encode(text)`.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut start = 0usize;
        let mut chars = 0usize;
        // Python slices by code points: cut every `max_encode_chars` characters.
        for (byte_idx, _) in text.char_indices() {
            if chars == self.max_encode_chars {
                self.encode_chunk(&text[start..byte_idx], &mut out)?;
                start = byte_idx;
                chars = 0;
            }
            chars += 1;
        }
        if start < text.len() {
            self.encode_chunk(&text[start..], &mut out)?;
        }
        Ok(out)
    }

    /// tiktoken `_encode_native` with every special token allowed.
    fn encode_chunk(&self, text: &str, out: &mut Vec<TokenId>) -> Result<()> {
        let mut start = 0usize;
        loop {
            let next_special = match &self.special_pattern {
                Some(re) => re.find_at(text, start),
                None => None,
            };
            let end = next_special.map_or(text.len(), |m| m.start());
            // The pre-tokenizer sees only the text up to the special token, as in tiktoken.
            for piece in self.pattern.find_iter(&text[start..end]) {
                let bytes = piece.as_str().as_bytes();
                if let Some(&id) = self.ranks.get(bytes) {
                    out.push(id);
                } else {
                    self.byte_pair_encode(bytes, out)?;
                }
            }
            match next_special {
                Some(m) => {
                    let id = self.special.get(m.as_str()).copied().ok_or_else(|| {
                        Error::Internal(format!(
                            "special token {:?} matched but unknown",
                            m.as_str()
                        ))
                    })?;
                    out.push(id);
                    start = m.end();
                }
                None => break,
            }
        }
        Ok(())
    }

    fn rank_of(&self, bytes: &[u8]) -> Result<TokenId> {
        self.ranks.get(bytes).copied().ok_or_else(|| {
            Error::bundle("tokenizer.tiktoken", "-", format!("no rank for byte sequence {bytes:?}"))
        })
    }

    fn byte_pair_encode(&self, piece: &[u8], out: &mut Vec<TokenId>) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if piece.len() == 1 {
            out.push(self.rank_of(piece)?);
            return Ok(());
        }
        let parts = byte_pair_merge(&self.ranks, piece);
        for w in parts.windows(2) {
            out.push(self.rank_of(&piece[w[0].0..w[1].0])?);
        }
        Ok(())
    }
}

/// tiktoken's `_byte_pair_merge`: returns part boundaries `(start, rank)`, the last two entries
/// being sentinels. Identical merge order (lowest rank, then leftmost) gives identical ids.
fn byte_pair_merge(ranks: &HashMap<Vec<u8>, TokenId>, piece: &[u8]) -> Vec<(usize, TokenId)> {
    let rank_of = |b: &[u8]| ranks.get(b).copied().unwrap_or(TokenId::MAX);
    let mut parts: Vec<(usize, TokenId)> = Vec::with_capacity(piece.len() + 1);
    let mut min_rank: (TokenId, usize) = (TokenId::MAX, usize::MAX);
    for i in 0..piece.len() - 1 {
        let rank = rank_of(&piece[i..i + 2]);
        if rank < min_rank.0 {
            min_rank = (rank, i);
        }
        parts.push((i, rank));
    }
    parts.push((piece.len() - 1, TokenId::MAX));
    parts.push((piece.len(), TokenId::MAX));

    let get_rank = |parts: &Vec<(usize, TokenId)>, i: usize| {
        if i + 3 < parts.len() {
            rank_of(&piece[parts[i].0..parts[i + 3].0])
        } else {
            TokenId::MAX
        }
    };

    while min_rank.0 != TokenId::MAX {
        let i = min_rank.1;
        if i > 0 {
            parts[i - 1].1 = get_rank(&parts, i - 1);
        }
        parts[i].1 = get_rank(&parts, i);
        parts.remove(i + 1);

        min_rank = (TokenId::MAX, usize::MAX);
        for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
            if rank < min_rank.0 {
                min_rank = (rank, i);
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fish-speech's FISH_TIKTOKEN_PATTERN (fish_speech/tokenizer.py).
    const FISH: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{P}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(\?!\S)|\s+";

    /// A hand-made table: all 256 bytes, then merges in rank order.
    fn toy() -> Tokenizer {
        let mut ranks: HashMap<Vec<u8>, TokenId> =
            (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        for (i, m) in ["ab", "bc", "abc", "cd", " h", "he", " he", "ll", "llo"].iter().enumerate() {
            ranks.insert(m.as_bytes().to_vec(), 256 + i as u32);
        }
        let special: HashMap<String, TokenId> =
            [("<|im_end|>".to_string(), 1000), ("<|speaker:0|>".to_string(), 1001)].into();
        Tokenizer::new(ranks, special, FISH, 400_000).unwrap()
    }

    #[test]
    fn tokenizer_merges_lowest_rank_first() {
        let t = toy();
        // "abcd": pairs ab(256) bc(257) cd(259) → ab first → [ab][c][d] → abc(258) → [abc][d].
        assert_eq!(t.encode("abcd").unwrap(), vec![258, b'd' as u32]);
        // "bcd": bc(257) before cd(259) → [bc][d].
        assert_eq!(t.encode("bcd").unwrap(), vec![257, b'd' as u32]);
    }

    #[test]
    fn tokenizer_pretokenizes_words_with_leading_space() {
        let t = toy();
        // pieces "hello", " hello" (regex) — "hello": he+llo; " hello": " he"+"llo"
        assert_eq!(t.encode("hello hello").unwrap(), vec![261, 264, 262, 264]);
    }

    #[test]
    fn tokenizer_matches_special_tokens_first() {
        let t = toy();
        assert_eq!(t.encode("ab<|im_end|>ab").unwrap(), vec![256, 1000, 256]);
        assert_eq!(t.encode("<|speaker:0|>").unwrap(), vec![1001]);
        // Not a special token: falls back to bytes.
        let ids = t.encode("<|x|>").unwrap();
        assert!(ids.iter().all(|&i| i < 256));
    }

    #[test]
    fn tokenizer_pattern_question_bang_is_literal() {
        let re = Regex::new(FISH).unwrap();
        let pieces: Vec<&str> = re.find_iter("a  ?!b").map(|m| m.as_str()).collect();
        assert_eq!(pieces, vec!["a", "  ?!b"]);
    }

    #[test]
    fn tokenizer_chunks_by_code_points() {
        let mut ranks: HashMap<Vec<u8>, TokenId> =
            (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        ranks.insert(b"ab".to_vec(), 300);
        let t = Tokenizer::new(ranks, HashMap::new(), FISH, 3).unwrap();
        // "abab" cut after 3 chars: "aba" | "b" → [ab][a] [b]
        assert_eq!(t.encode("abab").unwrap(), vec![300, b'a' as u32, b'b' as u32]);
        // Multi-byte characters count once.
        assert_eq!(t.encode("ééé").unwrap().len(), 6);
    }

    #[test]
    fn tokenizer_parses_tiktoken_ranks() {
        let r = Tokenizer::parse_ranks("IQ== 0\nIg== 1\n\naGk= 2\n", "t").unwrap();
        assert_eq!(r[&b"hi".to_vec()], 2);
        assert!(matches!(
            Tokenizer::parse_ranks("!!! x", "t"),
            Err(Error::BundleInvalid { field, .. }) if field == "line 1"
        ));
    }
}
