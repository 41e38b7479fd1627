"""GAN family: gan (MLP), dcgan, cgan (models.py) on the shared training of family.py; the losses, regularizers and
networks are shared by the GANs to come."""

from gen_research.models.gan.models import CGAN, DCGAN, GAN
from gen_research.models.gan.stylegan import StyleGAN

__all__ = ["CGAN", "DCGAN", "GAN", "StyleGAN"]
