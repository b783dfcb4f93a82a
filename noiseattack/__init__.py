"""noiseattack: does a normalization layer survive batch noise? A harness for the IEBN attacks."""

__version__ = "0.1.0"
