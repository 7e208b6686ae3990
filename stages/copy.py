"""``copy``: the runtime's test stage. Copies every input file to the output, optionally after a
delay and with an injected failure rate — for the runtime's tests, the demo and the benchmark."""

from __future__ import annotations

import random
import time

from pydantic import BaseModel, ConfigDict, Field

from watchers.errors import TransientError
from watchers.sidecar import Sidecar
from watchers.stage import Context, Stage


class CopySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_seconds: float = Field(0.0, ge=0, description="sleep this long per job")
    failure_rate: float = Field(0.0, ge=0, le=1, description="chance of a TransientError per try")
    route: str | None = Field(None, description="next stage to route to (default: the first)")


class CopyStage(Stage):
    type_name = "copy"
    Settings = CopySettings

    def process(self, job: Sidecar, ctx: Context) -> None:
        settings = self.settings
        assert isinstance(settings, CopySettings)
        if settings.delay_seconds:
            time.sleep(settings.delay_seconds)
        if settings.failure_rate and random.random() < settings.failure_rate:
            raise TransientError("copy stage: injected failure")
        if ctx.next_stages:
            for name in ctx.inputs:
                ctx.copy_input(name)
            if settings.route:
                ctx.route(settings.route)
        ctx.set_facts(copied=len(ctx.inputs))
