"""Encoders: raw text / image / audio -> L2-normalised native-space vectors."""
