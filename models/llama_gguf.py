"""Shared by models/make-fixtures.py and models/make-bench-model.py: a SentencePiece-style
vocabulary and the header of a llama-architecture GGUF file (tensors are added by the caller)."""

import gguf


def spm_vocabulary(words):
    """3 control tokens, 256 byte tokens (so any text tokenizes), then `words`."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(words)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def llama_writer(path, name, vocabulary, *, n_ctx, n_embd, n_layer, n_ff, n_head, file_type):
    """A GGUFWriter for a llama model with these hyperparameters and vocabulary (BOS 1 added,
    EOS 2), ready for its tensors."""
    tokens, scores, types = vocabulary
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
