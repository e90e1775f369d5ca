"""Errors that tell the user what to fix."""

from __future__ import annotations


class CellfoundryError(Exception):
    """Base error: ``message`` says what is wrong, ``hint`` says how to fix it."""

    code = "error"

    def __init__(self, message: str, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class DataError(CellfoundryError):
    """The input data cannot be used as it is."""

    code = "invalid_data"


class CoverageError(DataError):
    """Too few of the model's genes are present in the query."""

    code = "low_gene_coverage"


class ModelError(CellfoundryError):
    """A model or checkpoint cannot be loaded or used."""

    code = "invalid_model"


class UnsafeFileError(DataError):
    """A file that reaches outside itself (HDF5 external storage, links, virtual datasets)."""

    code = "unsafe_file"
    status = 422


class FileLimitError(DataError):
    """A file that declares or needs more than the intake limits allow (shape, size, columns)."""

    code = "file_too_large"
    status = 413
