"""scGPT hyper-parameters, read from the published ``args.json`` (an argparse dump)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellfoundry.models.foundation import CheckpointError

# Keys the official embedding loader reads (scgpt.tasks.cell_emb); everything else is optional.
REQUIRED_KEYS = ("embsize", "nheads", "d_hid", "nlayers")
DEFAULT_MAX_LENGTH = 1200  # scgpt.tasks.embed_data(max_length=1200)


@dataclass
class ScGPTConfig:
    """The architecture and tokenisation settings of one scGPT checkpoint."""

    embsize: int = 512
    nheads: int = 8
    d_hid: int = 512
    nlayers: int = 12
    n_layers_cls: int = 3
    dropout: float = 0.2
    pad_token: str = "<pad>"
    pad_value: float = -2.0
    mask_value: float = -1.0
    n_bins: int = 51
    max_seq_len: int = DEFAULT_MAX_LENGTH
    input_emb_style: str = "continuous"
    pre_norm: bool = False
    # value given to the <cls> token: pad_value in the zero-shot embedding and pretraining paths
    cls_value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cls_value is None:
            self.cls_value = float(self.pad_value)
        if self.embsize % self.nheads:
            raise CheckpointError(
                f"args.json: embsize {self.embsize} is not divisible by nheads {self.nheads}",
                "use the args.json that was published with the checkpoint",
            )
        if self.input_emb_style != "continuous":
            raise CheckpointError(
                f"args.json: input_emb_style '{self.input_emb_style}' is not supported",
                "only the published 'continuous' value encoder is supported",
            )
        if self.n_bins < 2 or self.max_seq_len < 2:
            raise CheckpointError(
                f"args.json: n_bins={self.n_bins} and max_seq_len={self.max_seq_len} must both be ≥ 2",
                "use the args.json that was published with the checkpoint",
            )

    @property
    def head_dim(self) -> int:
        return self.embsize // self.nheads

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "args.json") -> ScGPTConfig:
        """Parse an ``args.json`` mapping; unknown keys are kept in ``extra``."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source} is not a JSON object", "use the published args.json")
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise CheckpointError(
                f"{source} lacks required keys: {', '.join(missing)}",
                "use the args.json that was published with the checkpoint",
            )
        ints = ("embsize", "nheads", "d_hid", "nlayers", "n_layers_cls", "n_bins", "max_seq_len")
        floats = ("dropout", "pad_value", "mask_value", "cls_value")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in known or v is None:
                continue
            try:
                if k in ints:
                    if isinstance(v, bool) or int(v) != float(v):
                        raise ValueError
                    kw[k] = int(v)
                elif k in floats:
                    kw[k] = float(v)
                elif k == "pre_norm":
                    kw[k] = bool(v)
                else:
                    kw[k] = str(v)
            except (TypeError, ValueError):
                raise CheckpointError(
                    f"{source}: '{k}' has the invalid value {v!r}",
                    "use the args.json that was published with the checkpoint",
                ) from None
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kw, extra=extra)

    @classmethod
    def read(cls, path: str | Path) -> ScGPTConfig:
        """Read and parse ``args.json``."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"cannot read {p}: {e}", "args.json must be a JSON object"
            ) from None
        return cls.from_dict(data, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        """The ``args.json`` mapping (extra keys included)."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}
