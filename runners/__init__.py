"""Simulation campaigns: Latin-hypercube designs, an asyncio work queue and a crash-safe HDF5 store."""
