"""fish-speech 0.1.0 (the S1 reference code) driven on a checkpoint: the tests' and golden's oracle.

Only tests and make_golden.py import this; the exporter itself never runs fish-speech.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch


def quiet_fish_logs() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def load_model(ckpt: Path):
    """DualARTransformer in fp32 with static caches, exactly as init_model sets it up (on CPU).

    Everything here runs under inference_mode, as generate() does: generate() re-creates the fast
    KV caches as inference tensors, which may then only be written in inference mode.
    """
    from fish_speech.models.text2semantic.llama import DualARTransformer

    quiet_fish_logs()
    model = DualARTransformer.from_pretrained(str(ckpt), load_weights=True)
    model = model.to(dtype=torch.float32).eval()
    model.setup_caches(max_batch_size=1, max_seq_len=model.config.max_seq_len, dtype=torch.float32)
    return model


def restricted(model, logits: torch.Tensor) -> np.ndarray:
    """Full-vocab logits [.., V] of the last position -> [semantic rows + im_end] (bundle head)."""
    from fish_speech.tokenizer import IM_END_TOKEN

    tk = model.tokenizer
    last = logits.reshape(-1, logits.shape[-1])[-1]
    im_end = tk.get_token_id(IM_END_TOKEN)
    return torch.cat([last[tk.semantic_begin_id : tk.semantic_end_id + 1], last[im_end : im_end + 1]]).numpy()


@torch.inference_mode()
def slow_step(model, tokens: np.ndarray, start: int):
    """forward_generate on tokens [1+N, T] at positions start.. -> (restricted logits, hidden [fast_dim])."""
    t = torch.from_numpy(np.asarray(tokens, dtype=np.int64))[None]
    r = model.forward_generate(t, torch.arange(start, start + t.shape[2]))
    return restricted(model, r.logits), r.hidden_states[0, -1].numpy()


@torch.inference_mode()
def reset_fast(model) -> None:
    for layer in model.fast_layers:  # decode_one_token_ar does this every frame
        layer.attention.kv_cache.k_cache.fill_(0)
        layer.attention.kv_cache.v_cache.fill_(0)


@torch.inference_mode()
def fast_step(model, hidden: np.ndarray | None, code: int | None, pos: int, rows: int) -> np.ndarray:
    """forward_generate_fast at position pos: input = hidden (pos 0) or fast_embeddings[code]."""
    if pos == 0:
        x = torch.from_numpy(np.asarray(hidden, dtype=np.float32))[None]
    else:
        x = model.fast_embeddings(torch.tensor([code]))
    return model.forward_generate_fast(x, torch.tensor([pos]))[0, -1, :rows].numpy()


def tokenizer(ckpt: Path):
    from fish_speech.tokenizer import FishTokenizer

    return FishTokenizer.from_pretrained(str(ckpt))


def prompt_ids(ckpt_or_tokenizer, num_codebooks: int, text: str, references=()) -> np.ndarray:
    """generate_long's ContentSequence(modality='interleave') -> encode_for_inference values."""
    from fish_speech.content_sequence import ContentSequence, TextPart, VQPart

    tk = tokenizer(ckpt_or_tokenizer) if isinstance(ckpt_or_tokenizer, Path) else ckpt_or_tokenizer
    seq = ContentSequence(modality="interleave")
    for ref_text, codes in references:
        seq.append([TextPart(text=ref_text), VQPart(codes=torch.as_tensor(np.asarray(codes)))], add_end=True, speaker=0)
    seq.append([TextPart(text=text)], add_end=False, speaker=0)
    values, _, _ = seq.encode_for_inference(tk, num_codebooks=num_codebooks)
    return values.numpy().astype(np.int64)


@torch.inference_mode()
def generate_frames(
    model, prompt: np.ndarray, max_new_tokens: int, temperature: float, top_p: float, repetition_penalty: float
) -> np.ndarray:
    """fish-speech generate() called as generate_long calls it -> frames [n, 1+N] (incl. im_end)."""
    from fish_speech.models.text2semantic.inference import decode_one_token_ar, generate

    p = torch.from_numpy(np.asarray(prompt, dtype=np.int64)).to(torch.int)
    y = generate(
        model=model,
        prompt=p,
        max_new_tokens=max_new_tokens,
        audio_masks=None,
        audio_parts=None,
        decode_one_token=decode_one_token_ar,
        temperature=torch.tensor(temperature, dtype=torch.float),
        top_p=torch.tensor(top_p, dtype=torch.float),
        repetition_penalty=torch.tensor(repetition_penalty, dtype=torch.float),
    )
    return y[:, p.shape[1] :].T.numpy().astype(np.int64)


@torch.inference_mode()
def engine_sampled_frames(
    model, prompt: np.ndarray, seed: int, temperature: float, top_p: float, repetition_penalty: float, max_frames: int
) -> np.ndarray:
    """The engine's sampling (default, fixed-penalty mode; Philox RNG) on fish-speech's logits.

    Frame f = 0 is the prefill frame (no penalty); decoded frame d = f - 1 is penalised over
    window_columns(history, d) of previously decoded frames: codebook k over row k + 1, the main
    token over row 0 mapped to head indices (ids outside the head ignored). Stops after an
    <|im_end|> frame or max_frames frames. -> [n, 1+N] (token id, c0..c_{N-1}).
    """
    from .sampling import sample, window_columns

    tk = model.tokenizer
    n_cb = model.config.num_codebooks
    rows = min(1024, model.config.codebook_size)
    sem_rows = tk.semantic_end_id - tk.semantic_begin_id + 1
    from fish_speech.tokenizer import IM_END_TOKEN

    im_end = tk.get_token_id(IM_END_TOKEN)
    history = np.zeros((1 + n_cb, max_frames), dtype=np.int64)
    frames = []
    cur = np.asarray(prompt, dtype=np.int64)
    pos = 0
    for f in range(max_frames):
        logits, hidden = slow_step(model, cur, pos)
        pos += cur.shape[1]
        if f == 0:
            win = None
        else:
            win = window_columns(history, f - 1)
        empty = np.zeros(0, dtype=np.int64)
        if win is None:
            main_win = empty
        else:
            ids = win[0]
            main_win = np.where(
                (ids >= tk.semantic_begin_id) & (ids <= tk.semantic_end_id),
                ids - tk.semantic_begin_id,
                np.where(ids == im_end, sem_rows, -1),
            )
        i = sample(logits, main_win, temperature, top_p, repetition_penalty, seed, f, 0)
        token = tk.semantic_begin_id + i if i < sem_rows else im_end
        codes = [i if i < sem_rows else 0]
        reset_fast(model)
        fast_step(model, hidden, None, 0, rows)
        for k in range(1, n_cb):
            lg = fast_step(model, None, codes[-1], k, rows)
            codes.append(
                sample(lg, empty if win is None else win[k + 1], temperature, top_p, repetition_penalty, seed, f, k)
            )
        frame = np.array([token] + codes, dtype=np.int64)
        frames.append(frame)
        if f >= 1:
            history[:, f - 1] = frame
        if token == im_end:
            break
        cur = frame[:, None]
    return np.stack(frames)
