"""Fine-tuning (:mod:`.loop`), validation by mIoU (:mod:`.val`) and the losses."""

from .loop import TrainError, TrainResults, save_checkpoint, train_sam

__all__ = ["TrainError", "TrainResults", "save_checkpoint", "train_sam"]
