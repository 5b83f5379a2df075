"""s1mini_export: fish-speech S1-mini checkpoint -> s1-mini model bundle (docs/bundle-format.md)."""

__version__ = "0.1.0"
FORMAT_NAME = "s1-mini-bundle"
FORMAT_VERSION = 3
FISH_SPEECH_VERSION = "0.1.0"
