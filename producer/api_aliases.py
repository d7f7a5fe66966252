"""api_aliases: GET /v1/aliases, the model aliases a submission may name instead of a model, and (issue 18) the
comparison of an alias's arms."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from capq.settings import Settings
from producer.queries import plain
from storage.aliases import AliasStore
from storage.errors import NotFound


def install(app: FastAPI, settings: Settings, auth) -> None:
    @app.get("/v1/aliases", tags=["jobs"])
    def list_aliases(caller=Depends(auth)) -> dict:
        """Aliases and their current weights; name one in `models` to let capq choose each image's model."""
        return {"aliases": [{"name": a["name"], "arms": a["arms"]} for a in AliasStore(settings).list()]}

    @app.get("/v1/aliases/{name}/comparison", tags=["evaluations"])
    def alias_comparison(name: str, caller=Depends(auth)) -> dict:
        """The newest comparison of the alias's arms (`capq eval compare --alias NAME`, or the evaluation worker on
        schedule): per arm CLIPScore, health signals and BLEU/CIDEr where references exist; per pair of arms each
        score's difference, 95% interval, p-value and significance (unpaired bootstrap). Scores only, no captions."""
        from storage.evaluations import EvaluationStore

        doc = EvaluationStore(settings).newest_alias_comparison(plain("name", name))
        if doc is None:
            raise NotFound(
                f"no comparison of alias {name!r} yet; run `capq eval compare --alias {name}` or wait for "
                "the evaluation worker's schedule (CAPQ_QUALITY_INTERVAL_S)"
            )
        return doc
