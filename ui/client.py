"""client: the capq HTTP API as the UI uses it; every failure becomes an ApiProblem a person can act on."""

from __future__ import annotations

import json

import httpx

COMPARE_TIMEOUT_S = 150.0  # above the API's default wait for the comparison, so its own 503 comes through


class ApiProblem(Exception):
    """What went wrong, in words for the person at the screen; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: int | None = None):
        super().__init__(message)
        self.message, self.status, self.retry_after_s = message, status, retry_after_s


def _wait_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"about {round(seconds / 60)} minutes"


def explain(resp: httpx.Response, what: str) -> ApiProblem:
    """The API's {"error": ...} turned into a message that says what happened and what to do."""
    try:
        detail = resp.json().get("error") or resp.text
    except (ValueError, AttributeError):
        detail = resp.text[:300]
    status = resp.status_code
    if status == 401:
        return ApiProblem(
            "The API key was not accepted (missing, wrong or revoked). Paste a valid key in the "
            "sidebar; an operator creates one with `capq keys create --owner NAME --tier TIER`.",
            status,
        )
    if status == 429:
        after = int(resp.headers.get("Retry-After") or 0)
        return ApiProblem(
            f"Too many requests: this key's hourly limit is reached. Try again in {_wait_words(after)}. ({detail})",
            status,
            after,
        )
    if status == 503:
        return ApiProblem(
            f"{what} is unavailable right now: {detail}. Try again shortly.",
            status,
            int(resp.headers.get("Retry-After") or 0) or None,
        )
    if status == 404:
        return ApiProblem(f"Not found: {detail}", status)
    if status == 405:
        return ApiProblem(
            f"This API does not offer that yet ({resp.request.method} {resp.request.url.path} answered 405: {detail}).",
            status,
        )
    if status >= 500:
        return ApiProblem(f"The API failed while handling {what.lower()} ({status}): {detail}", status)
    return ApiProblem(detail, status)


class Api:
    """One API base URL and key; methods return the API's JSON (or bytes) and raise ApiProblem."""

    def __init__(self, base_url: str, key: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers={"X-API-Key": key} if key else {}, timeout=timeout_s)

    def _call(self, method: str, path: str, what: str, **kwargs) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ApiProblem(f"The capq API at {self.base_url} did not answer in time ({what}). Try again.") from None
        except httpx.HTTPError:
            raise ApiProblem(
                f"Cannot reach the capq API at {self.base_url}. Check the address in the sidebar and "
                "that the API runs (`capq api`)."
            ) from None
        if resp.status_code >= 400:
            raise explain(resp, what)
        return resp

    def get(self, path: str, what: str, **params) -> dict:
        return self._call("GET", path, what, params={k: v for k, v in params.items() if v not in (None, "")}).json()

    def models(self) -> dict:
        return self.get("/v1/models", "The model list")

    def queues(self) -> dict:
        return self.get("/v1/queues", "The queue view")

    def submit(
        self,
        files: list[tuple[str, bytes]],
        models: list[str],
        preset: str | None,
        tier: str | None = None,
        translate: str | None = None,
    ) -> dict:
        data = {"models": ",".join(models)} | ({"preset": preset} if preset else {}) | ({"tier": tier} if tier else {})
        data |= {"translate": translate} if translate else {}
        return self._call(
            "POST",
            "/v1/jobs",
            "Submitting",
            data=data,
            files=[("files", (name, blob, "application/octet-stream")) for name, blob in files],
        ).json()

    def jobs(self, limit: int = 50) -> list[dict]:
        return self.get("/v1/jobs", "The job list", limit=limit)["jobs"]

    def job(self, job_id: str) -> dict:
        return self.get(f"/v1/jobs/{job_id}", "The job")

    def results(self, job_id: str, lang: str | None = None) -> dict:
        return self.get(f"/v1/jobs/{job_id}/results", "The results", lang=lang)

    def results_jsonl(self, job_id: str, lang: str | None = None) -> bytes:
        params = {"format": "jsonl"} | ({"lang": lang} if lang else {})
        return self._call("GET", f"/v1/jobs/{job_id}/results", "The results", params=params).content

    def cancel(self, job_id: str) -> dict:
        resp = self._call("DELETE", f"/v1/jobs/{job_id}", "Cancelling")
        try:
            return resp.json()
        except json.JSONDecodeError:
            return {"status": resp.status_code}

    def history(self, **filters) -> dict:
        return self.get("/v1/captions", "The caption history", **filters)

    def image(self, sha256: str, thumb: bool = True) -> bytes:
        return self._call(
            "GET", f"/v1/images/{sha256}", "The image", params={"size": "thumb" if thumb else "full"}
        ).content

    def thumbnails(self, shas: list[str]) -> dict[str, str]:
        """{sha256: data URL} for those of `shas` that are the caller's, in one request."""
        if not shas:
            return {}
        return self.get("/v1/thumbnails", "The thumbnails", sha256=list(dict.fromkeys(shas)))["thumbnails"]

    def evaluations(self, model: str | None = None, limit: int = 500) -> list[dict]:
        return self.get("/v1/evaluations", "The evaluations", model=model, limit=limit)["evaluations"]

    def compare(self, a: str, b: str, preset: str | None = None) -> dict:
        params = {k: v for k, v in {"a": a, "b": b, "preset": preset}.items() if v}
        # The API awaits an evaluation worker's answer for up to CAPQ_COMPARE_WAIT_S (120 s by default).
        resp = self._call("GET", "/v1/evaluations/compare", "The comparison", params=params, timeout=COMPARE_TIMEOUT_S)
        return resp.json()

    def translation(self) -> dict:
        return self.get("/v1/translate", "Translation")
