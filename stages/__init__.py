"""dashspool's processing stages: one module per stage, backends in folders named for what they
are. The registry table below is the one place a stage type is made known; a stage's module is
imported only when a pipeline uses it."""

from __future__ import annotations

from watchers.stage import Registry

REGISTRY = Registry(
    [
        ("copy", "stages.copy:CopyStage"),
        ("ingest", "stages.ingest:IngestStage"),
        ("preprocess", "stages.preprocess:PreprocessStage"),
        ("heavy", "stages.heavy:HeavyStage"),
        ("archive", "stages.archive:ArchiveStage"),
    ]
)
