"""The runtime on the real 135M default base equals plain PEFT (one integration test)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.realbase


def test_real_base_mixed_batch_and_greedy_generation_match_peft(tmp_path):
    from adapterhub import load_base
    from adapterhub.runtime import AdapterHub
    from adapterhub.tokens import left_pad
    from adapterhub.runtime.testing import load_peft, make_random_adapters

    base = load_base(device="cpu", progress=False)
    adapters = {
        "lora": make_random_adapters(base, tmp_path, r=8, std=0.02)[0],
        "dora": make_random_adapters(base, tmp_path, r=4, use_dora=True, target_modules=["q_proj", "v_proj"],
                                     std=0.02, prefix="dora")[0],
        "prefix": make_random_adapters(base, tmp_path, method="prefix", num_virtual_tokens=8, std=0.5)[0],
    }
    tokenizer = base.tokenizer
    texts = ["The patient reports chest pain and shortness of breath.", "Revenue rose 8% on strong demand.",
             "Either party may terminate this Agreement.", "What is the capital of France?"]
    rows = [tokenizer(text)["input_ids"] for text in texts]
    input_ids, mask = left_pad(rows, pad_id=tokenizer.pad_token_id, device="cpu")
    domains = ["lora", "prefix", None, "dora"]
    with AdapterHub(base) as hub:
        for name, path in adapters.items():
            hub.load(path, name=name)
        got = hub.logits(input_ids, mask, domains=domains)
        with torch.no_grad():
            for i, (name, ids) in enumerate(zip(domains, rows)):
                model = base.model if name is None else load_peft(base, adapters[name])
                expected = model(input_ids=torch.tensor([ids])).logits[0]
                assert torch.allclose(got[i, -len(ids):], expected, atol=1e-4), name
                assert name is None or (expected - base.model(input_ids=torch.tensor([ids])).logits[0]).abs().max() > 0.1

        prompt = tokenizer.apply_chat_template([{"role": "user", "content": texts[3]}], tokenize=False,
                                               add_generation_prompt=True)
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            expected = load_peft(base, adapters["lora"]).generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                pad_token_id=tokenizer.pad_token_id)
        answer = hub.generate(texts[3], domain="lora", max_new_tokens=8)
        assert answer == tokenizer.decode(expected[0, ids.shape[1]:], skip_special_tokens=True).strip()
