"""text2image: Stable-Diffusion-style text-to-image latent diffusion (UNet2DConditionModel on a text encoder's hidden states)."""
