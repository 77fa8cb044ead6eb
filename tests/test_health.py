"""/healthz and /metrics: live figures, 503 naming what is down, no log-in needed."""

from rq import Queue, Worker

from dashboard.jobqueue import get_redis
from sim.server import free_port


def test_healthz_is_ok_with_database_redis_and_a_worker(app, client):
    worker = Worker(["default"], connection=get_redis())
    worker.register_birth()
    try:
        Queue("urgent", connection=get_redis()).enqueue("builtins.print", "x")
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok", "db": "ok", "redis": "ok", "workers": 1, "queue_depth": 1}
    finally:
        worker.register_death()


def test_healthz_without_workers_is_degraded(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["workers"] == 0


def test_healthz_names_redis_when_it_is_down_and_answers_fast(app, client):
    import time

    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("pti_sync_redis", None)
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.get_json() == {"status": "degraded", "db": "ok", "redis": "down", "workers": 0,
                                   "queue_depth": None}


def test_healthz_names_the_database_when_it_is_down(app, client, tmp_path):
    from dashboard.extensions import db

    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    db.engine.dispose()
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {}
    engine = db.engines[None]
    original = engine.url
    try:
        db.engines[None] = db._make_engine(None, {"url": "sqlite:////nonexistent-dir/x.sqlite3"}, app)
        response = client.get("/healthz")
    finally:
        db.engines[None] = db._make_engine(None, {"url": original}, app)
    assert response.status_code == 503
    assert response.get_json()["db"] == "down"


def test_metrics_are_prometheus_text_with_rental_states(client, demo_business):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    body = response.get_data(as_text=True)
    assert "# TYPE pti_sync_rentals gauge" in body
    assert 'pti_sync_rentals{site="northgate",state="pending"}' in body
    assert "pti_sync_queue_depth" in body


def test_a_page_shows_a_plain_error_when_redis_is_down(app, client, auth):
    auth.login("manager")
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("pti_sync_redis", None)
    # The login form is the page that uses Redis (failure counter); it must still work, slower limit aside.
    auth.logout()
    assert auth.login("manager").status_code == 302


def test_a_page_says_the_database_is_not_answering_when_it_is_down(app, client, auth):
    """A logged-in manager opens the overview while the database is unreachable: a plain 503 page that says so,
    not a 500 (the error page itself must not need the database)."""
    from dashboard.extensions import db

    auth.login("manager")
    engine = db.engines[None]
    # Nothing listens there: the connection is refused, as by a PostgreSQL that is restarting.
    unreachable = (f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone" if engine.dialect.name == "postgresql"
                   else "sqlite:////nonexistent-dir/x.sqlite3")
    db.session.remove()
    down = db._make_engine(None, {"url": unreachable}, app)
    try:
        db.engines[None] = down
        response = client.get("/")
    finally:
        db.session.remove()
        db.engines[None] = engine
        down.dispose()
    assert response.status_code == 503
    assert "The database is not answering" in response.get_data(as_text=True)
