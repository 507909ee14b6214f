"""Shared set-up of the LLM tests: examples and a few-step training loop.

``train_steps`` does what the generic trainer does with a model kind (its parameter groups, its
``loss`` on shuffled batches), without epochs, validation or checkpoints, so that a test can
assert what a few dozen steps learn; ``tests/test_llm_kinds_trainer.py`` runs the real trainer.
"""

from __future__ import annotations

import random

import pytest
import torch

from emovox.data.examples import Example


def example(id: str, target: int, **fields) -> Example:
    return Example(id=id, target=target, **fields)


def train_steps(model, examples, *, steps: int, lr: float, batch_size: int = 4, seed: int = 0,
                class_weight: torch.Tensor | None = None) -> list[float]:
    optimizer = torch.optim.Adam(model.param_groups(lr, None), lr=lr)
    rng = random.Random(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order = list(range(len(examples)))
            rng.shuffle(order)
        batch = [examples[order.pop()] for _ in range(batch_size)]
        targets = torch.tensor([e.target for e in batch])
        loss, _ = model.loss(model.collate(batch, augment=True), targets, class_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.inference_mode()
def class_logits(model, examples, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    return torch.cat([model(model.collate(examples[i:i + batch_size])) for i in range(0, len(examples), batch_size)])


def accuracy(model, examples) -> float:
    predictions = class_logits(model, examples).argmax(-1)
    return float((predictions == torch.tensor([e.target for e in examples])).float().mean())


def write_llama_gguf(path, lm) -> None:
    """``lm`` (a tiny Llama and its byte-level BPE) as an F32 GGUF file, the way llama.cpp's converter writes one.

    Query and key rows are permuted as llama.cpp does (transformers undoes it on reading), so a
    round trip through ``convert_gguf`` must give back exactly the same model.
    """
    import json

    import gguf
    import numpy as np

    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    model, tok, cfg = lm.model, lm.tokenizer, lm.model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    spec = json.loads(tok.backend_tokenizer.to_str())
    added = {a["id"]: a["content"] for a in spec["added_tokens"]}
    tokens = [added.get(i, t) for t, i in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in added else 1 for i in range(len(tokens))])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight" for hf, g in parts.items()})
    state = {k: v.float().numpy() for k, v in model.state_dict().items()}
    for hf, name in names.items():
        t = state[hf]
        if ".attn_q." in name:
            t = permute(t, cfg.num_attention_heads)
        elif ".attn_k." in name:
            t = permute(t, cfg.num_key_value_heads)
        w.add_tensor(name, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny LLMs train on one torch thread (fastest for small models here); restored afterwards.
    Autouse in every test module that imports it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
