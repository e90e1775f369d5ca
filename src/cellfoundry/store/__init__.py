"""The platform's database (SQLAlchemy 2 + Alembic) and its file storage."""

from cellfoundry.store.db import Database, migrate
from cellfoundry.store.storage import FileStorage

__all__ = ["Database", "FileStorage", "migrate"]
