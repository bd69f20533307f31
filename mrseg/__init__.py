"""mrseg: instance masks for images and videos with our own Mask R-CNN."""

__version__ = "0.1.0"
