"""scGPT vocabulary: ``vocab.json`` (gene symbol -> id) with the special tokens looked up by name."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from cellfoundry.models.foundation import CheckpointError

PAD, CLS, EOC = "<pad>", "<cls>", "<eoc>"
SPECIAL_TOKENS = (PAD, CLS, EOC)

# sha256 of the tokens in id order joined by "\n": the published whole-human vocab.json
# (default_census_vocab.json's 60,694 symbols, then <pad>, <cls>, <eoc>). Key order is irrelevant.
WHOLE_HUMAN_VOCAB_FINGERPRINT = "b79dc5e8c629abb3cde6995c2c00e31eb095bde418ffcb517ab118dee5601f47"
WHOLE_HUMAN_VOCAB_SIZE = 60_697


class ScGPTVocab:
    """Token <-> id maps; ids must be 0..N-1 without gaps (as the official GeneVocab requires)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens: list[str] = [str(t) for t in tokens]
        self.index: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            if t in self.index:
                raise CheckpointError(
                    f"vocab has the token '{t}' twice",
                    "use the vocab.json published with the model",
                )
            self.index[t] = i

    @classmethod
    def from_dict(cls, mapping: dict[str, int], source: str = "vocab.json") -> ScGPTVocab:
        """Build from ``{token: id}`` in any key order; append missing specials like the official code."""
        if not isinstance(mapping, dict) or not mapping:
            raise CheckpointError(
                f"{source} is not a non-empty JSON object", "use the published vocab.json"
            )
        bad = [k for k, v in mapping.items() if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise CheckpointError(
                f"{source}: ids must be integers (e.g. '{bad[0]}': {mapping[bad[0]]!r})",
                "use the published vocab.json",
            )
        n = len(mapping)
        by_id: list[str | None] = [None] * n
        for tok, i in mapping.items():
            if not 0 <= i < n or by_id[i] is not None:
                raise CheckpointError(
                    f"{source}: ids must be 0..{n - 1}, each used once ('{tok}' has id {i})",
                    "use the published vocab.json",
                )
            by_id[i] = tok
        tokens = [t for t in by_id if t is not None]
        tokens += [s for s in SPECIAL_TOKENS if s not in mapping]
        return cls(tokens)

    @classmethod
    def read(cls, path: str | Path) -> ScGPTVocab:
        """Read ``vocab.json``."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"cannot read {p}: {e}", "vocab.json must be a JSON object"
            ) from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_genes(cls, genes: Sequence[str]) -> ScGPTVocab:
        """Genes first (ids 0..), then <pad>, <cls>, <eoc> (the published append order)."""
        return cls([*genes, *(s for s in SPECIAL_TOKENS if s not in set(genes))])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __getitem__(self, token: str) -> int:
        return self.index[token]

    @property
    def pad_id(self) -> int:
        return self.index[PAD]

    @property
    def cls_id(self) -> int:
        return self.index[CLS]

    @property
    def genes(self) -> list[str]:
        """Non-special tokens in id order."""
        return [t for t in self.tokens if t not in SPECIAL_TOKENS]

    @property
    def gene_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.tokens) if t not in SPECIAL_TOKENS]

    def fingerprint(self) -> str:
        """sha256 of the tokens in id order (independent of the JSON key order)."""
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()

    def is_whole_human(self) -> bool:
        return (
            len(self) == WHOLE_HUMAN_VOCAB_SIZE
            and self.fingerprint() == WHOLE_HUMAN_VOCAB_FINGERPRINT
        )

    def to_dict(self) -> dict[str, int]:
        return dict(self.index)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.index))
