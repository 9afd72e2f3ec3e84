"""Where eyetrackpy publishes the paper's predictor files (``fmv1``, ``fmv2``): their names, Drive ids and
base models. It imports nothing heavy, so the command line can offer the predictors without loading what
fetching them needs (``gazerm.features.fmv_files``)."""

from __future__ import annotations

from dataclasses import dataclass

# Google Drive's direct-download endpoint; confirm=t skips the virus-scan page shown for large files.
DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"


@dataclass(frozen=True)
class PublishedFile:
    """One predictor's checkpoint as eyetrackpy publishes it, and the base model it reads text with."""

    predictor: str
    name: str  # the file name eyetrackpy saves it under
    drive_id: str
    base: str  # the hub model whose tokenizer (fmv2: and config) gaze.base holds, saved locally

    @property
    def published_url(self) -> str:
        """The address eyetrackpy's model_manager.py names."""
        return f"https://drive.google.com/uc?id={self.drive_id}"

    def url(self, mirror: str | None) -> str:
        if mirror:
            return f"{mirror.rstrip('/')}/{self.name}"
        return DRIVE_DOWNLOAD.format(id=self.drive_id)


PUBLISHED = {
    "fmv1": PublishedFile(
        "fmv1", "T5-tokenizer-BiLSTM-TRT-12-concat-3", "1_skRPxLzlY3d68bKk1cf656pYFc--URt", "t5-small"
    ),
    "fmv2": PublishedFile("fmv2", "model.pth", "1CTiali54Q7zsT25ciY0y0sIIf2jZVbZG", "roberta-base"),
}
