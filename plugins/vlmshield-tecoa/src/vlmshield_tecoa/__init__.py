"""vlmshield-tecoa: the TeCoA defense and its zoo entries (see plugin.py)."""
