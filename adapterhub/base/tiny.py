"""A tiny random llama with a real byte-level BPE tokenizer, for tests and smoke runs.

It exercises exactly the code paths of the real base (llama architecture,
chat template, safetensors on disk) in milliseconds.

>>> from adapterhub.base.tiny import make_tiny_llama
>>> path = make_tiny_llama("/tmp/tiny-llama")  # doctest: +SKIP
>>> from adapterhub import load_base
>>> load_base(str(path)).spec.hidden_size  # doctest: +SKIP
64
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = """
The quarterly revenue of the company rose while operating margins narrowed and guidance was cut.
Patient reports chest pain, shortness of breath, a rash on both arms and numbness in the left hand.
This Agreement shall be governed by the laws of the State of New York; either party may terminate.
The Supplier shall indemnify the Customer against all claims; invoices are payable within thirty days.
Confidential information must not be disclosed; liability is limited to the fees paid in twelve months.
positive negative neutral cardiology dermatology gastroenterology neurology orthopedics pulmonology
confidentiality termination indemnification governing_law limitation_of_liability payment_terms
What is the capital of France? Paris. Answer with one word. Classify the following text.
"""


def make_tiny_tokenizer(vocab_size: int = 384):
    """A deterministic byte-level BPE tokenizer with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator([line for line in _CORPUS.splitlines() if line] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_llama(path: str | Path, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                    kv_heads: int = 2, intermediate: int = 128, seed: int = 0) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` + tokenizer to ``path`` and return it.

    The default widths are ones every bitsandbytes CPU path takes in 4 bits (see :func:`make_tiny_bert`).

    Args:
        path: output directory (created).
        layers, hidden, heads, kv_heads, intermediate: model size.
        seed: weights are a pure function of the seed, so two calls with the
            same arguments give the same fingerprint and different seeds differ.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


_ENCODER_CORPUS = _CORPUS + """
Aspirin and metformin were started for type 2 diabetes; she denies chest pain but reports nausea.
Apple and Goldman Sachs reported revenue of $4.2 billion, up 8% from a year ago, or 70 cents a share.
The patient with COPD was given albuterol; no fever, mild headache, productive cough for three days.
"""


def make_tiny_wordpiece_tokenizer(vocab_size: int = 400):
    """A deterministic uncased WordPiece tokenizer (BERT-style: ``[CLS] text [SEP]``, offsets mapping)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    core.train_from_iterator([line for line in _ENCODER_CORPUS.splitlines() if line] * 4, trainer=trainer)
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def make_tiny_bert(path: str | Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, intermediate: int = 128,
                   seed: int = 0) -> Path:
    """Save a tiny random ``BertModel`` (pooler included) + WordPiece tokenizer to ``path`` and return it.

    The encoder twin of :func:`make_tiny_llama`: ``load_base(path)`` gives an encoder base. Its default widths
    (like the tiny llama's) are ones every bitsandbytes CPU path takes in 4 bits: out features a multiple of 32
    and in features a multiple of the 64-wide quantisation block (:func:`adapterhub.base.quantized.can_pack`).

    >>> from adapterhub.base.tiny import make_tiny_bert
    >>> path = make_tiny_bert("/tmp/tiny-bert")  # doctest: +SKIP
    >>> load_base(str(path)).kind  # doctest: +SKIP
    'encoder'
    """
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tokenizer = make_tiny_wordpiece_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = BertModel(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
