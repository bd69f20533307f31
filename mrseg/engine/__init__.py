"""The jobs behind the commands, one package each, over the model (`mrseg.model`), the inputs (`mrseg.data`)
and the writers (`mrseg.outputs`): `predict/` (`Predictor` and the folder job of `mrseg predict`), `train/`,
`evaluate/` (`mrseg eval`), `convert.py`; beside them what several jobs share: `device.py`, `distributed.py`
(torchrun), `progress.py` and `run_dirs.py`.
"""
