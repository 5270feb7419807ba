"""The HTTP API's operator calls: the store's figures, the purge, the tokens (listed and
revoked), the audit log's checkpoint. Each act is audited under the token's name, as the
CLI's are under --operator.

The audit log's entries are read on the store's host only (`cdrtrace audit export`):
they name the lines and callers each identifying read was about, and an operator's token
reads no caller.

A token is created on the store's host (`cdrtrace token create`), not over the API: it
is a new credential of any role, `legal` included, and over the network one stolen
operator token would then be enough to read every caller. Revoking one is what an
operator needs from afar (a switch stolen, a desk closed), and takes effect at the next
request."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Path

from ..evidence.tokens import Principal
from . import schemas as contract

TOKEN_NAME = Path(max_length=64, description="the token's name (`cdrtrace token list`)")


def add_routes(app: FastAPI, store: Any, as_operator: Any) -> None:
    """The operator's routes on app; as_operator: the dependency that admits an operator's
    token (http.build_app)."""

    @app.get("/v1/stats", tags=["operator"], response_model=None,
             responses=contract.answers(contract.Stats, 401, 403))
    def stats(principal: Principal = as_operator) -> dict:
        """Per feed: records, rejects, watermark, lag; the index's size."""
        return store.stats()

    @app.post("/v1/purge", tags=["operator"], response_model=None,
              responses=contract.answers(contract.PurgeAnswer, 400, 401, 403, 413))
    def purge(body: contract.PurgeRequest, principal: Principal = as_operator) -> dict:
        """Remove the trace records past retention (and the archive's old days)."""
        return store.purge(operator=str(principal), older_than_days=body.older_than_days)

    @app.get("/v1/tokens", tags=["operator"], response_model=None,
             responses=contract.answers(list[contract.TokenEntry], 401, 403))
    def tokens(principal: Principal = as_operator) -> list:
        """Every token's name, role and dates (a token itself is never shown again)."""
        return store.tokens.listed()

    @app.delete("/v1/tokens/{name}", tags=["operator"], response_model=None,
                responses=contract.answers(contract.Revoked, 400, 401, 403, 404))
    def revoke(name: str = TOKEN_NAME, principal: Principal = as_operator) -> dict:
        """Revoke a token: refused from its next request on (400 if it already was)."""
        store.tokens.revoke(name, operator=str(principal))
        return {"revoked": name}

    @app.get("/v1/audit/checkpoint", tags=["operator"], response_model=None,
             responses=contract.answers(contract.Checkpoint, 401, 403))
    def checkpoint(principal: Principal = as_operator) -> dict:
        """The audit log's head, MAC'd under the store's key: kept by a system outside the
        store's reach, it lets `cdrtrace audit verify --checkpoint` prove that no entry up
        to it was changed, removed or re-chained since."""
        return store.audit_checkpoint()
