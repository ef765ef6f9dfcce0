"""Shared by models/make-fixtures.py and models/make-bench-model.py: a SentencePiece-style
vocabulary, a GPT-2 byte-level BPE one, and the header of a llama-architecture GGUF file (tensors
are added by the caller)."""

import gguf


def spm_vocabulary(words):
    """3 control tokens, 256 byte tokens (so any text tokenizes), then `words`."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(words)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def gpt2_byte_symbols():
    """GPT-2's byte-to-unicode mapping: the symbol of each byte 0..255 in byte-level BPE
    vocabularies (printable bytes stand for themselves, the others are shifted past U+0100, the
    space is "Ġ")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def bpe_vocabulary(merges, specials):
    """A GPT-2 byte-level BPE vocabulary: the 256 byte symbols (ids 0..255, in byte order),
    then the result of each merge ("x y" → "xy", in rank order), then `specials` (control
    tokens). Returns (tokens, types, merges)."""
    tokens = gpt2_byte_symbols()
    for m in merges:
        left, right = m.split(" ")
        assert left in tokens and right in tokens, m
        tokens.append(left + right)
    assert len(set(tokens)) == len(tokens), "a merge repeats a token"
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * len(specials)
    return tokens + list(specials), types, list(merges)


def bpe_llama_writer(path, name, vocabulary, *, bos, eos, add_bos, pre, **shape):
    """A GGUFWriter for a llama model with a GPT-2 byte-level BPE vocabulary (from
    bpe_vocabulary; tokenizer.ggml.pre `pre`, one llama.cpp knows) and the hyperparameters of
    llama_writer, ready for its tensors."""
    tokens, types, merges = vocabulary
    w = _llama_header(path, name, **shape)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    return w


def _llama_header(path, name, *, n_ctx, n_embd, n_layer, n_ff, n_head, file_type):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(file_type)
    return w


def llama_writer(path, name, vocabulary, *, n_ctx, n_embd, n_layer, n_ff, n_head, file_type):
    """A GGUFWriter for a llama model with these hyperparameters and vocabulary (BOS 1 added,
    EOS 2), ready for its tensors."""
    tokens, scores, types = vocabulary
    shape = dict(n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head)
    w = _llama_header(path, name, file_type=file_type, **shape)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    return w
