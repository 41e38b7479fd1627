"""The local CLIP family (``clip``), its locally trained BPE tokenizer, and loading frozen CLIP text encoders."""
