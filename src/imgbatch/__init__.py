"""imgbatch: bulk product-image compression — CSV in, compressed images and an output CSV out."""

__version__ = "0.1.0"
