"""GAN family: gan (MLP), dcgan, cgan (models.py) on the shared training of family.py; the losses, regularizers and
networks are shared by the GANs to come."""

from gen_research.models.gan.models import CGAN, DCGAN, GAN

__all__ = ["CGAN", "DCGAN", "GAN"]
