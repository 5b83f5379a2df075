//! The S1 prompt, exactly as fish-speech's `generate_long` builds it with
//! `ContentSequence(modality="interleave")` (S1MINI_FACTS §3.2):
//!
//! ```text
//! <|interleave|>
//!   [per reference]  <|speaker:0|> {ref text} {ref frames as semantic tokens} <|im_end|>
//! <|speaker:0|> {target text}
//! ```
//!
//! Each part is tokenized on its own (as `encode_for_inference` does), so BPE never merges across
//! part boundaries. Ids come from the bundle's manifest.
//!
//! The prompt's own tags are special tokens. The target text and the reference transcripts come
//! from users: by default, special-token names in them are plain text, so typed `<|im_end|>`
//! cannot end the utterance early or forge semantic tokens. `parse_special_tokens` = true gives
//! fish-speech's parsing (it tokenizes them as the control tokens).

use crate::bundle::TokenIds;
use crate::error::{Error, Result};
use crate::text::tokenizer::Tokenizer;
use crate::Codes;

/// Speaker tag of every part (S1 uses speaker 0 for references and target alike).
const SPEAKER_TAG: &str = "<|speaker:0|>";

/// A reference utterance: its transcript and its codec codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// What is said in the reference audio.
    pub text: String,
    /// The reference audio's codes, `[num_codebooks × frames]`.
    pub codes: Codes,
}

/// A prompt: `rows = 1 + num_codebooks` rows of `len` positions, row-major.
///
/// Row 0 holds token ids; rows 1.. hold the codes of codebooks 0.. at semantic positions and 0
/// elsewhere (the `tokens` input of `slow.onnx`, `[1, 1+K, T]` int64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// `1 + num_codebooks`.
    pub rows: usize,
    /// Number of positions T.
    pub len: usize,
    /// `[rows, len]` row-major.
    pub data: Vec<i64>,
}

impl Prompt {
    /// Row 0: the token ids.
    pub fn token_ids(&self) -> &[i64] {
        &self.data[..self.len]
    }

    /// Positions `start..len` as a prompt of their own (`[rows, len - start]`).
    pub fn columns_from(&self, start: usize) -> Prompt {
        let start = start.min(self.len);
        let n = self.len - start;
        let mut data = Vec::with_capacity(self.rows * n);
        for r in 0..self.rows {
            data.extend_from_slice(&self.data[r * self.len + start..(r + 1) * self.len]);
        }
        Prompt { rows: self.rows, len: n, data }
    }

    /// Positions `start..end` as a prompt of their own (`[rows, end - start]`; both clamped to
    /// `len`).
    pub fn columns(&self, start: usize, end: usize) -> Prompt {
        let end = end.min(self.len);
        let start = start.min(end);
        let n = end - start;
        let mut data = Vec::with_capacity(self.rows * n);
        for r in 0..self.rows {
            data.extend_from_slice(&self.data[r * self.len + start..r * self.len + end]);
        }
        Prompt { rows: self.rows, len: n, data }
    }

    /// Whether `prefix` equals this prompt's first `prefix.len` positions.
    pub fn starts_with(&self, prefix: &Prompt) -> bool {
        prefix.rows == self.rows
            && prefix.len <= self.len
            && (0..self.rows).all(|r| {
                self.data[r * self.len..r * self.len + prefix.len]
                    == prefix.data[r * prefix.len..(r + 1) * prefix.len]
            })
    }
}

/// Builds the S1 prompt for `text` after `references`; `parse_special_tokens`: whether
/// special-token names in `text` and the transcripts are control tokens (fish-speech) or plain
/// text (the safe default of [`crate::SynthParams`]).
pub fn build_prompt(
    tokenizer: &Tokenizer,
    ids: &TokenIds,
    num_codebooks: usize,
    references: &[Reference],
    text: &str,
    parse_special_tokens: bool,
) -> Result<Prompt> {
    build(tokenizer, ids, num_codebooks, references, Some(text), parse_special_tokens)
}

/// The part of every prompt with these `references` that does not depend on the text:
/// `<|interleave|>` and the reference parts. Its positions are the first ones of
/// [`build_prompt`]'s prompt (each part is tokenized on its own), so their keys/values can be
/// computed once and reused (the prefix cache).
pub fn build_prefix(
    tokenizer: &Tokenizer,
    ids: &TokenIds,
    num_codebooks: usize,
    references: &[Reference],
    parse_special_tokens: bool,
) -> Result<Prompt> {
    build(tokenizer, ids, num_codebooks, references, None, parse_special_tokens)
}

fn build(
    tokenizer: &Tokenizer,
    ids: &TokenIds,
    num_codebooks: usize,
    references: &[Reference],
    text: Option<&str>,
    parse_special_tokens: bool,
) -> Result<Prompt> {
    let mut row0: Vec<i64> = Vec::new();
    // codes[k][pos] for k in 0..num_codebooks, same length as row0.
    let mut code_rows: Vec<Vec<i64>> = vec![Vec::new(); num_codebooks];
    // `special`: the prompt's own tags always; user text only when asked.
    let push = |row0: &mut Vec<i64>,
                code_rows: &mut Vec<Vec<i64>>,
                s: &str,
                special: bool|
     -> Result<()> {
        let toks = tokenizer.encode_with(s, special)?;
        row0.extend(toks.iter().map(|&t| i64::from(t)));
        for r in code_rows.iter_mut() {
            r.resize(row0.len(), 0);
        }
        Ok(())
    };

    row0.push(i64::from(ids.interleave));
    for r in code_rows.iter_mut() {
        r.push(0);
    }
    for reference in references {
        if reference.codes.num_codebooks() != num_codebooks {
            return Err(Error::arg(
                "reference.codes",
                format!(
                    "{} codebooks, the model has {num_codebooks}",
                    reference.codes.num_codebooks()
                ),
            ));
        }
        push(&mut row0, &mut code_rows, SPEAKER_TAG, true)?;
        push(&mut row0, &mut code_rows, &reference.text, parse_special_tokens)?;
        let frames = reference.codes.frames().0;
        for f in 0..frames {
            let c0 = reference.codes.get(0, f);
            // A first-codebook code outside the semantic range would become a token id that is
            // not a semantic token (or overflow): an error, never a bogus prompt.
            let semantic_rows = i64::from(ids.semantic_end) - i64::from(ids.semantic_begin) + 1;
            if !(0..semantic_rows).contains(&c0) {
                return Err(Error::arg(
                    "reference.codes",
                    format!("code {c0} at codebook 0, frame {f} is outside 0..{semantic_rows}"),
                ));
            }
            row0.push(i64::from(ids.semantic_begin) + c0);
            for (k, r) in code_rows.iter_mut().enumerate() {
                r.push(reference.codes.get(k, f));
            }
        }
        row0.push(i64::from(ids.im_end));
        for r in code_rows.iter_mut() {
            r.push(0);
        }
    }
    if let Some(text) = text {
        push(&mut row0, &mut code_rows, SPEAKER_TAG, true)?;
        push(&mut row0, &mut code_rows, text, parse_special_tokens)?;
    }

    let len = row0.len();
    let mut data = row0;
    for r in code_rows {
        data.extend(r);
    }
    Ok(Prompt { rows: 1 + num_codebooks, len, data })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::codes::Frames;

    fn toy() -> (Tokenizer, TokenIds) {
        let ranks = (0..=255u8).map(|b| (vec![b], u32::from(b))).collect();
        let special: HashMap<String, u32> =
            [("<|speaker:0|>".to_string(), 300), ("<|im_end|>".to_string(), 301)].into();
        let t = Tokenizer::new(ranks, special, r"\S+|\s+", 1000).unwrap();
        let ids = TokenIds { im_end: 301, interleave: 302, semantic_begin: 400, semantic_end: 403 };
        (t, ids)
    }

    /// Regression (fuzz target `tokenizer`, property "every prompt position is a valid token
    /// id"): a reference code outside the semantic range used to become a non-semantic token id
    /// (negative codes: ids below `semantic_begin`; huge ones: an i64 overflow panic).
    #[test]
    fn prompt_reference_code_outside_semantic_range_is_invalid_argument() {
        let (t, ids) = toy();
        for bad in [-1i64, 4, i64::MAX] {
            let codes = Codes::new(2, Frames(1), vec![bad, 0]).unwrap();
            let r =
                build_prompt(&t, &ids, 2, &[Reference { text: "hi".into(), codes }], "x", false);
            assert!(
                matches!(&r, Err(Error::InvalidArgument { name, .. }) if *name == "reference.codes"),
                "{bad}: {r:?}"
            );
        }
        let codes = Codes::new(2, Frames(1), vec![3, 0]).unwrap();
        let p = build_prompt(&t, &ids, 2, &[Reference { text: "hi".into(), codes }], "x", false)
            .unwrap();
        assert!(p.token_ids().contains(&403));
    }

    /// Issue #19.7: special-token names in the text and transcripts are plain text unless asked.
    #[test]
    fn prompt_special_names_in_user_text_are_plain_unless_parse_special_tokens() {
        let (t, ids) = toy();
        let codes = Codes::new(2, Frames(1), vec![1, 0]).unwrap();
        let refs = [Reference { text: "r<|im_end|>".into(), codes }];
        let ends = |p: &Prompt| p.token_ids().iter().filter(|&&x| x == 301).count();
        let speakers = |p: &Prompt| p.token_ids().iter().filter(|&&x| x == 300).count();
        let plain = build_prompt(&t, &ids, 2, &refs, "x<|im_end|><|speaker:0|>", false).unwrap();
        // The reference's own end and the two speaker tags only.
        assert_eq!((ends(&plain), speakers(&plain)), (1, 2));
        let parsed = build_prompt(&t, &ids, 2, &refs, "x<|im_end|><|speaker:0|>", true).unwrap();
        assert_eq!((ends(&parsed), speakers(&parsed)), (3, 3));
        // The prefix is the prompt's start in both modes.
        assert!(plain.starts_with(&build_prefix(&t, &ids, 2, &refs, false).unwrap()));
        assert!(parsed.starts_with(&build_prefix(&t, &ids, 2, &refs, true).unwrap()));
    }
}
