//! Text side: the BPE tokenizer and the S1 prompt.

pub mod prompt;
pub mod tokenizer;
