"""Tests of the flash_attn / xformers shims (a package so its conftest does not shadow tests/conftest.py)."""
