from pathlib import Path

import pytest

from recsys.contract import MODEL_LOAD_ORDER
from recsys.settings import SettingsError, load_settings
from serving.server_args import build_server_args


def test_default_config_loads_and_binds_to_loopback() -> None:
    settings = load_settings()
    assert settings.server.bind_address == "127.0.0.1"
    assert settings.server.model_control_mode == "explicit"


def test_unknown_key_is_rejected_with_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("serving:\n  num_candidatez: 5\n")
    with pytest.raises(SettingsError, match=r"(?s)bad\.yaml.*num_candidatez"):
        load_settings(bad)


def test_wrong_type_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  http_port: eighty\n")
    with pytest.raises(SettingsError, match="http_port"):
        load_settings(bad)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_server_args_restrict_the_model_repository_api_and_load_in_order() -> None:
    server = load_settings().server
    args = build_server_args(server, "/models", admin_key="s3cret")
    assert "--model-control-mode=explicit" in args
    loads = [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")]
    assert loads == list(MODEL_LOAD_ORDER)
    assert loads[-1] == "recommender"
    assert "--http-restricted-api=model-repository:triton-admin-key=s3cret" in args
    assert "--grpc-restricted-protocol=model-repository:triton-admin-key=s3cret" in args
    assert "--http-address=127.0.0.1" in args


def test_server_args_refuse_an_empty_admin_key() -> None:
    with pytest.raises(ValueError, match="admin_key"):
        build_server_args(load_settings().server, "/models", admin_key="")


def test_launcher_refuses_a_port_already_in_use(tmp_path: Path) -> None:
    import socket

    from serving.launcher import ServerStartError, TritonServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = load_settings().server.model_copy(update={"http_port": port})
        launcher = TritonServer(tmp_path, server, tmp_path / "log.txt")
        with pytest.raises(ServerStartError, match=f"http port 127.0.0.1:{port} is already in use"):
            launcher.start()
        assert launcher.process is None
