"""Image-to-image family (issue 14): Pix2Pix (paired), CycleGAN (unpaired), StarGAN (multi-domain).

Modules: networks.py (the U-Net, PatchGAN, ResNet generator and StarGAN's G and D of the reference code, with the
sizes and depths they need), image_pool.py (CycleGAN's checkpointed image pool).
"""
