from __future__ import annotations

from pathlib import Path

import pytest

from cluster.services.errors import ServiceError
from cluster.services.state import (
    ServiceName,
    ServiceRecord,
    ServicesState,
    default_cache_dir,
    load_state,
    save_state,
    state_lock,
    state_path,
)


def _record(tmp_path: Path, name: ServiceName) -> ServiceRecord:
    return ServiceRecord(
        name=name,
        pid=4242,
        pid_start_ticks=123456,
        endpoint="127.0.0.1:39092" if name is ServiceName.KAFKA else "http://127.0.0.1:39000",
        env_var=f"RAYBUS_{name.upper()}",
        log_path=tmp_path / name / "service.log",
        temp_dir=tmp_path / name,
    )


def test_the_state_file_round_trips_every_record(tmp_path: Path) -> None:
    state = ServicesState(
        services={name: _record(tmp_path, name) for name in ServiceName},
    )
    path = state_path(tmp_path / "cache")

    save_state(path, state)

    assert load_state(path) == state
    assert list(path.parent.iterdir()) == [path]  # no temp files left behind


def test_a_missing_state_file_is_an_empty_state(tmp_path: Path) -> None:
    assert load_state(tmp_path / "services.json") == ServicesState()


def test_a_corrupt_state_file_is_a_service_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text('{"services": {"kafka": {"pid": "not a pid"}}}')

    with pytest.raises(ServiceError, match=r"services\.json"):
        load_state(path)


def test_a_second_command_fails_at_once_while_the_lock_is_held(tmp_path: Path) -> None:
    with state_lock(tmp_path), pytest.raises(ServiceError, match="another"), state_lock(tmp_path):
        pass
    with state_lock(tmp_path):  # released again afterwards
        pass


def test_the_cache_dir_comes_from_the_environment_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYBUS_CACHE_DIR", str(tmp_path / "custom"))
    assert default_cache_dir() == tmp_path / "custom"

    monkeypatch.delenv("RAYBUS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "raybus"

    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "raybus"
