"""DART: robustification of a domain-adapted model by disentangled distillation into a student."""
