"""GAN family: gan (MLP), dcgan, cgan (models.py), progan (progan.py) and stylegan (stylegan.py), all on the shared
training of family.py (GANBase) with the shared losses, regularizers, DiffAugment and ADA."""

from gen_research.models.gan.models import CGAN, DCGAN, GAN
from gen_research.models.gan.progan import ProGAN
from gen_research.models.gan.stylegan import StyleGAN

__all__ = ["CGAN", "DCGAN", "GAN", "ProGAN", "StyleGAN"]
