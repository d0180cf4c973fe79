"""dermflow: reproducible GAN-balanced skin-lesion classification on HAM10000."""

__version__ = "0.1.0"
