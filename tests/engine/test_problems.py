"""The register of problems under concurrent writers: one row per cause, and nobody's work lost to the race."""

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import event, select

from dashboard.engine.problems import open_problem, site_problem
from dashboard.extensions import db
from dashboard.models import OpenProblem, Site
from tests.engine.conftest import site


def test_two_workers_opening_one_cause_at_once_record_it_once_and_both_commit(app, business):
    """Two accounts of a site meet its refused credentials in two workers: both look, find no row, and insert.
    The second must neither fail its transaction (it holds the account's push) nor record the problem twice."""
    site_id = site("hilltop").id
    db.session.commit()
    start, inserting = threading.Barrier(2), threading.Barrier(2)
    waited = threading.local()

    def meet_at_the_insert(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO PROBLEMS") and not getattr(waited, "done", False):
            waited.done = True
            inserting.wait(timeout=10)

    def open_it() -> bool:
        with app.app_context():
            start.wait(timeout=10)
            try:
                new = open_problem(site_problem(db.session.get(Site, site_id), "invalid_credentials", "refused"))
                db.session.commit()
                return new
            finally:
                db.session.remove()

    event.listen(db.engine, "before_cursor_execute", meet_at_the_insert)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            news = sorted(f.result() for f in [pool.submit(open_it), pool.submit(open_it)])
    finally:
        event.remove(db.engine, "before_cursor_execute", meet_at_the_insert)
    assert inserting.n_waiting == 0 and not inserting.broken, "the two workers did not race to the insert"
    rows = db.session.scalars(select(OpenProblem).where(OpenProblem.site_id == site_id)).all()
    assert [r.cause for r in rows] == [f"site:{site('hilltop').sg_id}:invalid_credentials"]
    assert news == [False, True]  # owed to Storeganise once


def test_a_standing_problem_is_not_new_and_takes_the_latest_detail(app, business):
    hilltop = site("hilltop")
    assert open_problem(site_problem(hilltop, "invalid_credentials", "first")) is True
    assert open_problem(site_problem(hilltop, "invalid_credentials", "second")) is False
    db.session.commit()
    assert db.session.scalar(select(OpenProblem.detail).where(OpenProblem.site_id == hilltop.id)) == "second"
