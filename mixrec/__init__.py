"""mixrec: multimodal recommendation plugin for BentoML.

This package is the shared base layer (config, catalog, storage, errors, events, embeddings,
ranking, ann, process helpers); it imports nothing from encoders/, fusion/, services/ or tools/
(see .importlinter and the README's Layout).
"""
__version__ = "0.1.0"
