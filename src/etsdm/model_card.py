"""The model card of an exported diffusers folder; it lives in :mod:`etsdm.runs.model_card` (beside
the export that writes it), re-exported here under its old name."""

from .runs.model_card import condition_summary, model_card, sampling_notes, write_model_card

__all__ = ["condition_summary", "model_card", "sampling_notes", "write_model_card"]
