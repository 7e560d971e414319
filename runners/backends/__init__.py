"""Executors: the LUMINA-SN subprocess backend and the embedded JAX synthesizer backend."""
