"""Model families: one folder each, discovered by gen_research.registry.load_builtins (nothing to list here).

What a family provides and what the rest of the code may ask it is in gen_research/models/contract.py.
"""
