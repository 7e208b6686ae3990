"""dashspool's processing stages: one module per stage, backends in folders named for what they
are. The registry table below is the one place a stage type is made known."""

from __future__ import annotations

from stages.copy import CopyStage
from stages.ingest import IngestStage
from stages.preprocess import PreprocessStage
from watchers.stage import Registry

REGISTRY = Registry([CopyStage, IngestStage, PreprocessStage])
