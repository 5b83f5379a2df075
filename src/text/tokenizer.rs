//! A tiktoken-compatible byte-level BPE tokenizer, as fish-speech's `FishTokenizer` uses it.
//!
//! - ranks come from `tokenizer.tiktoken` (`base64(token) rank` per line);
//! - special tokens (names → ids from the manifest) are matched first, all of them allowed,
//!   like tiktoken's `encode(allowed_special=all)`, in [`Tokenizer::encode`] (trusted text);
//!   [`Tokenizer::encode_ordinary`] treats their names as plain text (user text);
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

    /// Encodes `text` exactly as fish-speech's `FishTokenizer.encode(text)`: special-token
    /// names in the text become the special tokens (`<|im_end|>` ends the utterance). Use it on
    /// trusted text only; [`Tokenizer::encode_ordinary`] is the one for user text.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        self.encode_with(text, true)
    }

    /// Encodes `text` with special-token names treated as plain text (tiktoken's
    /// `encode_ordinary`): `"<|im_end|>"` typed by a user becomes the tokens of those characters,
    /// never the control token.
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<TokenId>> {
        self.encode_with(text, false)
    }

    /// [`Tokenizer::encode`] (`special` = true) or [`Tokenizer::encode_ordinary`].
    pub fn encode_with(&self, text: &str, special: bool) -> Result<Vec<TokenId>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut start = 0usize;
        let mut chars = 0usize;
        // Python slices by code points: cut every `max_encode_chars` characters.
        for (byte_idx, _) in text.char_indices() {
            if chars == self.max_encode_chars {
                self.encode_chunk(&text[start..byte_idx], special, &mut out)?;
                start = byte_idx;
                chars = 0;
            }
            chars += 1;
        }
        if start < text.len() {
            self.encode_chunk(&text[start..], special, &mut out)?;
        }
        Ok(out)
    }

    /// tiktoken `_encode_native` with every special token allowed (`special`) or none.
    fn encode_chunk(&self, text: &str, special: bool, out: &mut Vec<TokenId>) -> Result<()> {
        let mut start = 0usize;
        loop {
            let next_special = match &self.special_pattern {
                Some(re) if special => re.find_at(text, start),
                _ => None,
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

#[cfg(test)]
thread_local! {
    /// Work done by [`byte_pair_merge`] on this thread (heap entries popped), for the tests.
    static MERGE_WORK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Test seam: the merge work done on this thread so far (see [`MERGE_WORK`]).
#[cfg(test)]
pub(crate) fn merge_work_on_this_thread() -> usize {
    MERGE_WORK.with(|w| w.get())
}

/// tiktoken's `_byte_pair_merge`, in O(n log n) instead of tiktoken's O(n²): returns part
/// boundaries `(start, rank)`, the last entry being the end `(n, MAX)` (the ranks in the result
/// are not used). The merge order is tiktoken's: always the adjacent pair of lowest rank, the
/// leftmost on ties, so the ids are identical.
///
/// tiktoken rescans every part after each merge, which made one long pre-token (65 536 × 'ま' is
/// a single `\p{L}+` piece) cost 45 s. Here every pair's rank lives in a min-heap keyed by
/// `(rank, start)`: the leftmost lowest pair is at the top. A merge changes only the ranks of the
/// merged part's pairs with its neighbours; their old heap entries are skipped when popped
/// (`rank[i]` no longer matches), which is sound because a part only grows, so its pair's byte
/// string, and hence rank, never repeats.
fn byte_pair_merge(ranks: &HashMap<Vec<u8>, TokenId>, piece: &[u8]) -> Vec<(usize, TokenId)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let n = piece.len();
    let rank_of = |b: &[u8]| ranks.get(b).copied().unwrap_or(TokenId::MAX);
    // Parts are named by their start byte; next[i] = start of the following part (n at the end).
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
    let mut alive = vec![true; n];
    // rank[i]: rank of part i merged with its successor (MAX when none, or not a token).
    let pair_rank = |next: &[usize], i: usize| -> TokenId {
        let j = next[i];
        if j >= n {
            TokenId::MAX
        } else {
            rank_of(&piece[i..next[j]])
        }
    };
    let mut rank: Vec<TokenId> = (0..n).map(|i| pair_rank(&next, i)).collect();
    let mut heap: BinaryHeap<Reverse<(TokenId, usize)>> = rank
        .iter()
        .enumerate()
        .filter(|&(_, &r)| r != TokenId::MAX)
        .map(|(i, &r)| Reverse((r, i)))
        .collect();
    while let Some(Reverse((r, i))) = heap.pop() {
        #[cfg(test)]
        MERGE_WORK.with(|w| w.set(w.get() + 1));
        if !alive[i] || rank[i] != r {
            continue; // stale: the part was merged away or its pair changed since
        }
        // Merge part i with its successor j.
        let j = next[i];
        alive[j] = false;
        next[i] = next[j];
        if next[j] < n {
            prev[next[j]] = i;
        }
        rank[i] = pair_rank(&next, i);
        if rank[i] != TokenId::MAX {
            heap.push(Reverse((rank[i], i)));
        }
        let p = prev[i];
        if p < n {
            rank[p] = pair_rank(&next, p);
            if rank[p] != TokenId::MAX {
                heap.push(Reverse((rank[p], p)));
            }
        }
    }
    let mut parts: Vec<(usize, TokenId)> = Vec::new();
    let mut i = 0;
    while i < n {
        parts.push((i, rank[i]));
        i = next[i];
    }
    parts.push((n, TokenId::MAX));
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
    fn tokenizer_encode_ordinary_keeps_special_names_as_text() {
        let t = toy();
        let ids = t.encode_ordinary("ab<|im_end|>ab").unwrap();
        assert!(!ids.contains(&1000), "{ids:?}");
        assert_eq!(ids[0], 256);
        assert_eq!(t.encode_ordinary("abcd").unwrap(), t.encode("abcd").unwrap());
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

    /// tiktoken's `_byte_pair_merge` as it was here before issue #19.6 (quadratic), the reference
    /// the heap merge must equal.
    fn reference_byte_pair_merge(
        ranks: &HashMap<Vec<u8>, TokenId>,
        piece: &[u8],
    ) -> Vec<(usize, TokenId)> {
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

    /// The tiny bundle's tokenizer (ranks and pattern of tests/fixtures/tiny, no specials).
    fn tiny() -> Tokenizer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
        let text = std::fs::read_to_string(dir.join("tokenizer.tiktoken")).unwrap();
        let ranks = Tokenizer::parse_ranks(&text, "tokenizer.tiktoken").unwrap();
        Tokenizer::new(ranks, HashMap::new(), FISH, 400_000).unwrap()
    }

    fn merge_work(t: &Tokenizer, text: &str) -> usize {
        MERGE_WORK.with(|w| w.set(0));
        t.encode(text).unwrap();
        MERGE_WORK.with(|w| w.get())
    }

    /// Issue #19.6: one long pre-token (65 536 × 'ま' is one `\p{L}+` piece) took 45 s, and
    /// doubling it quadrupled the time: the merge loop rescanned every part after each merge.
    /// The work must grow linearly (up to a log factor) with the piece.
    #[test]
    fn tokenizer_merge_work_is_near_linear_in_piece_length() {
        let t = tiny();
        let n = 4096;
        let w1 = merge_work(&t, &"ま".repeat(n));
        let w2 = merge_work(&t, &"ま".repeat(2 * n));
        let w4 = merge_work(&t, &"ま".repeat(4 * n));
        assert!(w1 > 0);
        // Quadratic work gives ratios of 4; n log n about 2.2.
        assert!(w2 * 10 <= w1 * 25 && w4 * 10 <= w2 * 25, "work {w1} -> {w2} -> {w4}");
    }

    fn starts(parts: &[(usize, TokenId)]) -> Vec<usize> {
        parts.iter().map(|p| p.0).collect()
    }

    /// The heap merge gives tiktoken's parts: against the old (quadratic) loop, on the tiny
    /// bundle's ranks and the toy ones, for short and long pieces and pseudo-random byte strings.
    #[test]
    fn tokenizer_heap_merge_equals_reference_merge() {
        let tiny = tiny();
        let toy = toy();
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/README.md"),
        )
        .unwrap();
        let mut pieces: Vec<Vec<u8>> = vec![
            "ま".repeat(3000).into_bytes(),
            "abababcabcd".repeat(500).into_bytes(),
            " hello".repeat(400).into_bytes(),
            "ました、".repeat(700).into_bytes(),
        ];
        pieces.extend(text.split_whitespace().map(|w| w.as_bytes().to_vec()));
        // Pseudo-random strings over the bytes of the README (xorshift, fixed seed).
        let alphabet: Vec<u8> = text.bytes().collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in [2usize, 3, 5, 17, 64, 300, 2000] {
            for _ in 0..20 {
                let p: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                pieces.push(p);
            }
        }
        for t in [&tiny, &toy] {
            for p in pieces.iter().filter(|p| p.len() >= 2) {
                assert_eq!(
                    starts(&byte_pair_merge(&t.ranks, p)),
                    starts(&reference_byte_pair_merge(&t.ranks, p)),
                    "{:?}",
                    String::from_utf8_lossy(&p[..p.len().min(40)])
                );
            }
        }
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
