"""mrseg: instance masks for images and videos with our own Mask R-CNN."""

__version__ = "0.1.0"

__all__ = ["Failure", "Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import mrseg` (and the CLI's startup) doesn't pay for torch until a Predictor is wanted.
    if name == "Predictor":
        from mrseg.engine.predict.predictor import Predictor

        return Predictor
    if name == "Failure":
        from mrseg.engine.predict.stream import Failure

        return Failure
    raise AttributeError(f"module 'mrseg' has no attribute {name!r}")
