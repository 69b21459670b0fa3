"""Typed errors raised by encoders; each carries its HTTP status through ``mixrec.errors``."""

from __future__ import annotations

from mixrec.errors import InputError, MixrecError, PayloadTooLargeError, UnsupportedMediaTypeError


class EncoderError(MixrecError):
    """Base class for encoder failures (a 500 unless a subclass says otherwise)."""


class EncoderConfigError(EncoderError, ValueError):
    """An encoder cannot be built from its config (bad kind, missing weights, wrong dims)."""


class EncoderMismatchError(EncoderError, ValueError):
    """Vectors, artifacts or services come from encoders other than the ones expected. The message names
    both sides and the fix (retrain, re-encode, or configure the other encoder). A 503 when serving: the
    deployment, not the caller, is at fault."""

    status, code = 503, "encoder_mismatch"


class InvalidMediaError(EncoderError, InputError):
    """One input item cannot be encoded: corrupt, oversized, empty, unsupported (400).

    ``index`` is the item's position in the batch (None for a single item) and
    ``item_id`` the caller's id when known, so a batch error names the culprit.
    """

    status, code = 400, "bad_request"

    def __init__(self, reason: str, *, modality: str | None = None, index: int | None = None,
                 item_id: str | None = None):
        self.reason = reason
        self.modality = modality
        self.index = index
        self.item_id = item_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.modality:
            where.append(self.modality)
        if self.item_id is not None:
            where.append(f"item {self.item_id!r}")
        if self.index is not None:
            where.append(f"batch index {self.index}")
        prefix = f"invalid {' '.join(where)}: " if where else "invalid input: "
        return prefix + self.reason

    def at(self, index: int | None = None, item_id: str | None = None) -> "InvalidMediaError":
        """Return a copy (of the same class) that also names the batch position / item id."""
        return type(self)(self.reason, modality=self.modality,
                          index=self.index if index is None else index,
                          item_id=self.item_id if item_id is None else item_id)


class MediaTooLargeForBudgetError(InvalidMediaError, PayloadTooLargeError):
    """The input decodes to more pixels / samples / frames than the configured budget (413)."""

    status, code = 413, "payload_too_large"


class UnsupportedMediaFormatError(InvalidMediaError, UnsupportedMediaTypeError):
    """The bytes are not a format this modality reads (a text file as an image, a JPEG as audio) (415)."""

    status, code = 415, "unsupported_media_type"
