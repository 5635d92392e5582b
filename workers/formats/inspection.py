"""What the intake learned about a model: its files and the Inspection stored on ModelVersion
(pure: no Django)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from workers.formats.signature import Signature


class FileEntry(NamedTuple):
    """One file of a model: path relative to the model's root, its SHA-256 and size in bytes."""

    path: str
    sha256: str
    size: int


@dataclass


class Inspection:
    """What the intake learned about a model; stored on ModelVersion (to_dict / from_dict)."""

    format: str
    signature: Signature
    sha256: str
    total_size: int
    files: list[FileEntry]
    ir_version: int | None = None
    opset: int | None = None
    op_domains: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    primary: str = ""  # path of the model file among ``files``
    root: str | None = None  # directory ``files`` are relative to (None: a temporary one, now gone)
    producer: str = ""

    def to_dict(self) -> dict[str, Any]:
        """As stored on ModelVersion."""
        return {
            "format": self.format,
            "signature": self.signature.to_dict(),
            "sha256": self.sha256,
            "total_size": self.total_size,
            "files": [entry._asdict() for entry in self.files],
            "ir_version": self.ir_version,
            "opset": self.opset,
            "op_domains": list(self.op_domains),
            "notes": list(self.notes),
            "primary": self.primary,
            "root": self.root,
            "producer": self.producer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inspection:
        """From ``to_dict``'s form (files as dicts or as lists)."""
        files = [FileEntry(**f) if isinstance(f, dict) else FileEntry(*f) for f in data["files"]]
        return cls(
            format=data["format"],
            signature=Signature.from_dict(data["signature"]),
            sha256=data["sha256"],
            total_size=int(data["total_size"]),
            files=files,
            ir_version=data.get("ir_version"),
            opset=data.get("opset"),
            op_domains=list(data.get("op_domains", [])),
            notes=list(data.get("notes", [])),
            primary=data.get("primary", ""),
            root=data.get("root"),
            producer=data.get("producer", ""),
        )
