"""The drift sweep's report: what it found at a site is kept on the site and shown on its page."""

from __future__ import annotations

import re

from dashboard.extensions import db
from tests.engine.conftest import account_of, by_hand, customer_with, pushed, site, sweep_northgate, vacant_unit


def test_a_site_in_agreement_reports_no_drift_and_only_the_unit_names_pti_lacks(business, pti, auth, client):
    pushed(customer_with(1, overdue=False))

    report = sweep_northgate()

    assert (report.drifted, report.orphans, report.duplicates) == ([], [], {})
    in_pti = {u["name"] for u in pti.site("NG01")["units"]}
    mapped = {u.pti_unit_name for u in site("northgate").units if u.pti_unit_name and not u.pti_switched_off}
    assert report.unknown_units == sorted(mapped - in_pti)  # the demo maps a few units PTI does not have
    kept = site("northgate").drift_report
    assert kept["ours"] == report.ours >= 1 and kept["drifted"] == 0 and kept["orphans"] == 0
    auth.login("manager")
    html = client.get(f"/sites/{site('northgate').id}").get_data(as_text=True)
    assert all(f'data-drift="{kind}"' not in html for kind in ("drifted", "orphans", "duplicates"))
    assert "Drift report" in html and f"{report.pti_users} PTI users" in html


def test_drift_orphans_duplicates_and_unknown_units_are_reported_and_shown(business, pti, auth, client):
    changed = pushed(customer_with(1, overdue=False))
    twice = pushed(customer_with(2))
    with by_hand(pti) as in_pti:
        in_pti.update_user(changed.pti_user_id, access_code=changed.access_code + 1)  # someone retyped a code
        orphan = in_pti.create_user(email="left@example.com", first_name="Long", last_name="Gone",
                                     access_code=917263, access_level=1, time_zone=1, marker="sg-user-gone")
        copy = in_pti.create_user(email="copy@example.com", first_name="A", last_name="Copy", access_code=917264,
                                   access_level=1, time_zone=1, marker=twice.customer.sg_id)
    unit = vacant_unit()
    unit.pti_unit_name = "ZZ99"  # mapped in Storeganise to a name PTI does not have
    db.session.commit()

    report = sweep_northgate()

    assert changed.id in report.drifted
    assert [u.id for u in report.orphans] == [orphan.id]
    assert list(report.duplicates) == [twice.customer.sg_id]
    assert sorted(report.duplicates[twice.customer.sg_id]) == sorted([twice.pti_user_id, copy.id])
    assert "ZZ99" in report.unknown_units
    kept = site("northgate").drift_report
    assert kept["orphan_users"] == [{"id": orphan.id, "name": "Long Gone", "email": "left@example.com",
                                     "units": []}]
    assert "access_code" not in str(kept) and str(changed.access_code) not in str(kept)  # never a code

    auth.login("manager")
    html = client.get(f"/sites/{site('northgate').id}").get_data(as_text=True)
    counts = dict(re.findall(r'data-drift="(\w+)" data-count="(\d+)"', html))
    assert int(counts["drifted"]) == len(report.drifted) and counts["orphans"] == "1"
    assert counts["duplicates"] == "1" and int(counts["unknown_units"]) == len(report.unknown_units)
    assert changed.customer.name in html and "Long Gone" in html and "ZZ99" in html and copy.id in html
    # The drifted customers are already owed a push: the sweep asked for it.
    db.session.expire_all()
    assert account_of(changed.customer).generation > account_of(changed.customer).synced_generation
