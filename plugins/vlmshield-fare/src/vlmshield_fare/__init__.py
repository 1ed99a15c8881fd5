"""vlmshield-fare: the FARE defense and its zoo entries (see plugin.py)."""
