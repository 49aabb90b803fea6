"""Inference runtimes behind one interface, the chain that falls back between them, and what
this machine has (see base.py)."""
