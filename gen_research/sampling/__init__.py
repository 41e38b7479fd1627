"""Sampling building blocks: diffusion schedulers and the sampling loop, guidance, inpainting/img2img inputs.

What a family's ``sample`` accepts (its sampler names, steps, ...) is declared by the family
(gen_research/models/contract.py); ``python -m gen_research list samplers`` shows it per family.
"""
