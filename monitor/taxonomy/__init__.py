"""The harm taxonomy: category ids, names, descriptions, loaded from YAML and validated."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

# The verdict category of an event no harm category covers; every taxonomy reserves the id.
SAFE = "safe"
DEFAULT_TAXONOMY = Path(__file__).with_name("default.yaml")


class Category(BaseModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    name: str
    description: str
    examples: list[str] = Field(default_factory=list)


class Taxonomy(BaseModel):
    name: str
    version: int
    categories: list[Category]

    @field_validator("categories")
    @classmethod
    def _ids_unique_with_safe(cls, cats: list[Category]) -> list[Category]:
        ids = [c.id for c in cats]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate category id(s): {', '.join(dupes)}")
        if SAFE not in ids:
            raise ValueError(f"the taxonomy must contain a '{SAFE}' category")
        return cats

    @property
    def harm_ids(self) -> list[str]:
        """Harm category ids, in file order, without ``safe``."""
        return [c.id for c in self.categories if c.id != SAFE]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.categories]


def load_taxonomy(path: Path | str | None = None) -> Taxonomy:
    """Load and validate a taxonomy YAML, raising ``ValueError`` naming the file and field."""
    path = Path(path) if path else DEFAULT_TAXONOMY
    return _load(path.resolve())


@lru_cache(maxsize=8)
def _load(path: Path) -> Taxonomy:
    try:
        raw = yaml.safe_load(path.read_text())
        return Taxonomy.model_validate(raw)
    except FileNotFoundError:
        raise ValueError(f"taxonomy file not found: {path}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"taxonomy {path}: {where}: {first['msg']}") from None
