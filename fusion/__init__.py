"""Fusion: native encoder spaces -> one shared space -> LightFM hybrid model."""
