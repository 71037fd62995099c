"""What ``GET /v1/status`` answers: per tenant the last run this replica made, its hold and its
failures, the open warnings; the identity sources' last syncs from the state store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from replicator.logs import get_logger
from state import StoreError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from replicator.engine.results import TenantResult
    from replicator.service.workqueue import TenantState
    from state import Store

log = get_logger("replicator.service.daemon")


def outcome_name(result: TenantResult) -> str:
    """converged, pending (requeued: the platform is catching up) or failed."""
    if not result.ok:
        return "failed"
    return "pending" if result.requeued else "converged"


def source_syncs(store: Store | None) -> list[dict[str, object]]:
    """The last sync of each identity source, as ``sources`` shows them (blocking: reads the
    store); none when the store cannot be read (logged)."""
    if store is None:
        return []
    try:
        return [s.as_json() for s in store.syncs()]
    except StoreError as e:
        log.error("cannot read the identity sources' sync records", error=str(e))
        return []


def status_doc(
    replica: str,
    config_error: str | None,
    queue_depth: int,
    tenants_state: Mapping[str, TenantState],
    sources: list[dict[str, object]],
) -> dict[str, Any]:
    tenants = []
    for key, s in sorted(tenants_state.items()):
        last = s.last
        tenants.append(
            {
                "tenant": key,
                "lastFinished": s.last_finished.isoformat() if s.last_finished else None,
                "lastSuccess": s.last_success.isoformat() if s.last_success else None,
                "outcome": None if last is None else outcome_name(last),
                "changesApplied": last.applied if last else 0,
                "error": last.error if last else None,
                "held": s.held,
                "failures": s.failures,
                "warnings": [
                    {"code": w.code.value, "subject": w.subject, "message": w.message}
                    for w in (last.warnings if last else ())
                ],
            }
        )
    return {
        "replica": replica,
        "configError": config_error,
        "queueDepth": queue_depth,
        "tenants": tenants,
        "sources": sources,
    }
