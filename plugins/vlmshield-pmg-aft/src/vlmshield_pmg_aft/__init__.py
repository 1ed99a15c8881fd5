"""vlmshield-pmg-aft: the PMG-AFT defense and its zoo entries (see plugin.py)."""
