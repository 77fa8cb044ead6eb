"""push_site marks a whole site with set-based statements: the same intent as mark_dirty for each customer."""
from sqlalchemy import select


def test_mark_site_dirty_matches_mark_dirty(app):
    from dashboard.demo import load_business
    from dashboard.engine.intent import mark_dirty, mark_site_dirty
    from dashboard.extensions import db
    from dashboard.models import PtiAccount, Rental, Site, SyncState
    from sim.demo_data import build_demo_business

    load_business(build_demo_business("http://127.0.0.1:1"))
    site = db.session.scalars(select(Site).order_by(Site.id)).first()
    customers = sorted(set(db.session.scalars(select(Rental.customer_id).where(Rental.site_id == site.id))))
    # some accounts exist already, in various states; the others are created
    for i, c in enumerate(customers[:10]):
        a = mark_dirty(c, site.id, urgent=i % 2 == 0)
        a.synced_generation = a.generation + (i % 3)
        a.state = SyncState.FAILED if i % 4 == 0 else SyncState.IN_SYNC
        a.attempts = 3
    db.session.commit()
    before = {a.customer_id: (a.generation, a.synced_generation, a.urgent)
              for a in db.session.scalars(select(PtiAccount))}
    ids = mark_site_dirty(site.id, set(customers))
    db.session.commit()
    accounts = {a.customer_id: a for a in db.session.scalars(select(PtiAccount).where(PtiAccount.site_id == site.id))}
    assert ids == [accounts[c].id for c in customers]
    for c in customers:
        a = accounts[c]
        g, s, u = before.get(c, (1, 0, False))
        assert a.generation == max(g, s) + 1 and a.synced_generation == s and a.urgent == u
        assert a.state == SyncState.PENDING and a.attempts == 0 and a.next_attempt_at is None
    states = set(db.session.scalars(select(Rental.sync_state).where(
        Rental.site_id == site.id, Rental.state.in_(["occupied", "reserved"]))))
    assert states <= {SyncState.PENDING, SyncState.UNMAPPED, SyncState.DISABLED}, states
