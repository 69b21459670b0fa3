"""mixrec: multimodal recommendation plugin for BentoML."""
__version__ = "0.1.0"
