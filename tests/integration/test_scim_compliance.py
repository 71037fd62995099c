"""The third-party SCIM conformance checker ``scim2-tester`` against the live SCIM service provider
(the daemon over real HTTP, see test_scim.py). Every check that applies must pass; the checks the
tester skips (features ServiceProviderConfig declares unsupported: bulk, sort, password change,
...) are printed with their reason."""

from __future__ import annotations

from scim2_tester import check_server
from scim2_tester.utils import Status

from tests.support.scim_served import HttpxSCIMClient, Served

PASSED = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}


def test_scim2_tester_checks_pass(served: Served) -> None:
    client = HttpxSCIMClient(served.http())
    results = check_server(client)
    assert len(results) > 20, "the checker ran"

    lines, failed = [], []
    for r in results:
        line = f"{r.status.name:<10} {r.resource_type or '-':<6} {r.title}: {r.reason or ''}".rstrip()
        lines.append(line)
        if r.status not in PASSED and r.status != Status.SKIPPED:
            failed.append(line)
    print("\nscim2-tester results:\n" + "\n".join(lines))
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    print(
        f"\n{len(results)} checks, {len(results) - len(skipped) - len(failed)} passed, "
        f"{len(skipped)} skipped (not applicable), {len(failed)} failed"
    )
    assert not failed, "scim2-tester checks failed:\n" + "\n".join(failed)
    assert not served.store().list_objects("meshUser", source="scim"), "the checker deletes what it created"
