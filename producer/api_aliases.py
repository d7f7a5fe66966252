"""api_aliases: GET /v1/aliases, the model aliases a submission may name instead of a model."""
from __future__ import annotations

from fastapi import Depends, FastAPI

from capq.settings import Settings
from storage.aliases import AliasStore


def install(app: FastAPI, settings: Settings, auth) -> None:
    @app.get("/v1/aliases", tags=["jobs"])
    def list_aliases(caller=Depends(auth)) -> dict:
        """Aliases and their current weights; name one in `models` to let capq choose each image's model."""
        return {"aliases": [{"name": a["name"], "arms": a["arms"]} for a in AliasStore(settings).list()]}
