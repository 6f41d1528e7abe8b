"""Build a tiny llama-architecture GGUF model with random weights and a small SentencePiece-style vocabulary.

The real OpenAI-compatible server in the tests (llama-cpp-python's) needs a model; none is downloaded: this
script writes one of ~1 MB in well under a second. It runs in the server's own virtual environment (it needs
the `gguf` package, which the Makefile target installs there): `python tests/tiny_gguf.py OUT.gguf`.

Weights are seeded, so the model (and, at temperature 0, its answers) are the same on every machine. The output
rows of the control and byte tokens are zero, so greedy decoding picks word tokens and answers are printable.
"""

from __future__ import annotations

import sys

import gguf
import numpy as np

EMBED = 64
LAYERS = 2
HEADS = 4
FEED_FORWARD = 128
CONTEXT = 512
WORDS = ("the", "a", "cat", "dog", "sat", "on", "mat", "is", "red", "blue", "one", "two", "three", "yes", "no",
         "and", "of", "to", "in", "it", "answer", "digit", "model", "fast", "slow", "up", "down", "left", "right")


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, the 256 byte tokens, then '▁word' and 'word' pieces and single letters."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = [f"\u2581{w}" for w in WORDS] + list(WORDS) + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += ["\u2581", ".", ",", "?", ":"] + [str(d) for d in range(10)]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens, scores, [int(t) for t in types]


def build(path: str, seed: int = 0) -> None:
    """Write the model to `path`."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    vocab = len(tokens)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("profiler-tiny-test")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, EMBED))
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(EMBED, FEED_FORWARD))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    output = weight(vocab, EMBED)
    output[: 259] = 0.0  # never the control or byte tokens: greedy answers are words, never an early end
    writer.add_tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    build(sys.argv[1])
