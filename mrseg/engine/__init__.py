"""The jobs behind the commands, one package each, over the model (`mrseg.model`), the inputs (`mrseg.data`)
and the writers (`mrseg.outputs`):

- `predict/`: `Predictor` (in memory and streaming) and the folder job of `mrseg predict` — the stream
  (decode, batch, predict, track), the run folder, its lock and journal (resume), sharding under torchrun,
  tiling, the out-of-memory fallback and the writer thread.
- `train/`: `mrseg train` — the trainer (a small loop plus hooks: checkpoints, evaluation and best.pt,
  metrics, signals), its batch sampler, learning-rate schedule, checkpoints and validation.
- `evaluate/`: `mrseg eval` — pycocotools' COCOeval on a results file or a model's predictions.
- `convert.py`: `mrseg convert`, dataset to dataset through predict's writers.
- `device.py`: which device runs a model, for every command.
- `distributed.py`: the torchrun process group of predict and train (`Rank`, `join`, the collectives).
"""
