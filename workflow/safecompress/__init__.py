"""SafeCompress: membership-inference-tested dynamic sparse training (Zhu, Wang, Han, ASE 2022)."""

__version__ = "0.1.0"
