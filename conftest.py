"""Test-wide settings: nothing is downloaded and no installed plugin is autoloaded.

Tests that need a plugin register it for their duration with ``vlmshield.api.temporary_host``.
"""

import os

os.environ["VLMSHIELD_LOAD_PLUGINS"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("VLMSHIELD_STRICT_PLUGINS", None)
os.environ.pop("VLMSHIELD_DISABLE_PLUGINS", None)
