"""A store URL's password is never printed, logged, stored in the database or shown in the dashboard.

For real: a PostgreSQL role with a password (the local server trusts 127.0.0.1, so any password logs in; what
matters here is where the string ends up), small studies run through the `wavesweep` command with the URL given
by --store and by $WAVESWEEP_STORE, then every output, every file Ray and the exports wrote, every row of every
table and every element the dashboard renders is searched for the password.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect, select
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, synthetic_spec, write_spec
from tests.test_cli import wavesweep

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def secret():
    return f"hunter2-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def secret_url(pg_url, secret):
    """The test database, owned by a role of its own that has a password, and the URL that logs in as it."""
    import psycopg

    admin_info = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    database = make_url(pg_url).database
    role = f"ws_secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_info, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        admin.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
    yield make_url(pg_url).set(username=role, password=secret).render_as_string(hide_password=False)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
        admin.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        admin.execute(f"DROP OWNED BY {role}")
    with psycopg.connect(admin_info, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" OWNER TO CURRENT_USER')
        admin.execute(f"DROP ROLE {role}")


def leaks(secret: str, **texts: str) -> list[str]:
    return [name for name, value in texts.items() if secret in value]


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every regular file under ``roots`` whose bytes hold ``secret`` (logs, exports, Ray's session files)."""
    found = []
    needle = secret.encode()
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(str(path))
            except OSError:  # a socket, or a file Ray removed meanwhile
                continue
    return found


def every_row(url: str) -> str:
    """Every row of every table of the store, as text (read as the admin, without the role's password)."""
    engine = create_engine(make_url(url).set(username=make_url(PG_URL).username, password=None))
    try:
        meta = MetaData()
        meta.reflect(engine)
        assert set(inspect(engine).get_table_names()) >= {"studies", "waves", "runs", "run_metrics", "curve_points"}
        with engine.connect() as conn:
            return "\n".join(repr(row) for table in meta.sorted_tables for row in conn.execute(select(table)))
    finally:
        engine.dispose()


def dashboard_content(url: str, monkeypatch, **query: str) -> str:
    """Everything the dashboard renders for ``query`` (text, tables, charts), as its protobuf text."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WAVESWEEP_STORE", url)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown: list[str] = []

    def walk(node) -> None:
        if getattr(node, "proto", None) is not None:
            shown.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(shown)


@pytest.mark.slow
def test_a_password_in_the_store_url_ends_up_nowhere(secret_url, secret, tmp_path, monkeypatch):
    masked = make_url(secret_url).render_as_string(hide_password=True)
    assert "***" in masked and secret not in masked
    # Ray's session directory (logs, the driver's job info) under a short path of our own (sockets live there too).
    ray_tmp = Path(tempfile.mkdtemp(prefix="wsray", dir="/tmp"))
    try:
        base = {"RAY_TMPDIR": str(ray_tmp), "WAVESWEEP_STORE": ""}
        by_env = {**base, "WAVESWEEP_STORE": secret_url}
        spec = synthetic_spec("toy", seeds=[0], strategy={"mode": "grid", "runs_per_wave": 3})
        spec_flag = write_spec(tmp_path / "toy.yaml", spec)
        spec_env = write_spec(tmp_path / "viaenv.yaml", {**spec, "study": "viaenv"})
        exports = tmp_path / "exports"
        exports.mkdir()
        out = {
            "run --store": wavesweep("run", str(spec_flag), "--store", secret_url, cwd=tmp_path, env=base),
            "run $WAVESWEEP_STORE": wavesweep("run", str(spec_env), cwd=tmp_path, env=by_env),
        }
        for name, result in out.items():
            assert result.returncode == 0, (name, result.stdout, result.stderr)
        out.update({
            "status": wavesweep("status", "--store", secret_url, env=base),
            "status toy": wavesweep("status", "toy", "--store", secret_url, env=base),
            "status viaenv (env)": wavesweep("status", "viaenv", env=by_env),
            "export csv": wavesweep("export", "toy", "--store", secret_url, env=base),
            "export json -o": wavesweep("export", "viaenv", "--format", "json", "-o", str(exports / "v.json"),
                                        env=by_env),
            "export csv -o": wavesweep("export", "toy", "-o", str(exports / "t.csv"), "--store", secret_url, env=base),
            "analyze": wavesweep("analyze", "toy", "--store", secret_url, env=base),
            "analyze json (env)": wavesweep("analyze", "viaenv", "--format", "json", env=by_env),
            "plan": wavesweep("plan", str(spec_flag), "--store", secret_url, env=base),
            "db upgrade": wavesweep("db", "upgrade", "--store", secret_url, env=base),
            "db upgrade (env)": wavesweep("db", "upgrade", env=by_env),
        })
        for name, result in out.items():
            assert result.returncode == 0, (name, result.stdout, result.stderr)
        printed = {name: result.stdout + result.stderr for name, result in out.items()}
        assert leaks(secret, **printed) == []
        # The URL is shown, masked, wherever a command names the store.
        for name in ("run --store", "run $WAVESWEEP_STORE", "status", "status toy", "status viaenv (env)",
                     "db upgrade", "db upgrade (env)"):
            assert masked in printed[name], (name, printed[name])
        assert f"--store '{masked}'" in printed["run --store"]  # the export hint
        assert "min per run" in printed["plan"]  # its cost from the recorded runs' times

        assert (exports / "v.json").stat().st_size and (exports / "t.csv").stat().st_size
        sessions = list((ray_tmp / "ray").glob("session_*"))
        assert len(sessions) >= 2 and list(ray_tmp.rglob("*.log")), "Ray wrote no session logs where we pointed it"
        assert files_holding(secret, ray_tmp, exports, tmp_path) == []
        assert len(files_holding("COMPLETE", exports)) == 2  # the search does find what is there

        rows = every_row(secret_url)
        assert "toy" in rows and "viaenv" in rows and secret not in rows

        for query in ({"view": "Studies"}, {"view": "Runs", "study": "toy"}, {"view": "Overview", "study": "viaenv"}):
            shown = dashboard_content(secret_url, monkeypatch, **query)
            assert secret not in shown, query
            assert masked in shown, query  # the sidebar names the store, masked
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_errors_about_a_url_with_a_password_are_masked(secret, tmp_path):
    from orchestrator.errors import StoreError
    from orchestrator.store import Store

    unreachable = f"postgresql+psycopg://researcher:{secret}@127.0.0.1:1/wavesweep?connect_timeout=3"
    cases = {
        "unreachable": (unreachable, "postgresql+psycopg://researcher:***@127.0.0.1:1/wavesweep"),
        "port not a number": (f"postgresql://researcher:{secret}@127.0.0.1:port/db", "not a SQLAlchemy URL"),
        # an '@' in the password that is not escaped: SQLAlchemy would take the rest of it for the host
        "unescaped @": (f"postgresql://researcher:{secret}@x@127.0.0.1:1/db", "holds an '@' that is not escaped"),
        "bare postgresql://": (unreachable.replace("+psycopg", ""), "researcher:***@127.0.0.1:1/wavesweep"),
    }
    spec = write_spec(tmp_path / "toy.yaml", synthetic_spec())
    for case, (url, expected) in cases.items():
        for writer in (True, False):
            with pytest.raises(StoreError) as info:
                Store(url, writer=writer)
            assert expected in str(info.value) and secret not in str(info.value), (case, str(info.value))
        commands = {"status": ["status", "--store", url], "export": ["export", "toy", "--store", url],
                    "run": ["run", str(spec), "--store", url], "db upgrade": ["db", "upgrade"]}
        for name, args in commands.items():
            result = wavesweep(*args, cwd=tmp_path, env={"WAVESWEEP_STORE": url})
            assert result.returncode == 1, (case, name, result.stdout, result.stderr)
            shown = result.stdout + result.stderr
            assert expected in shown and secret not in shown and "Traceback" not in shown, (case, name, shown)
        assert secret[-6:] not in "".join(os.listdir(tmp_path))  # nothing named after it either
