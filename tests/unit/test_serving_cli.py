"""``cadasg serve``: flags into ServeArgs, and user errors caught before Ray starts."""

from __future__ import annotations

import argparse
import socket

import pytest

from cadasg_dist.cli import serve as serve_command
from cadasg_dist.errors import ArtifactError, ConfigError
from cadasg_dist.serving.auth import hash_key


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_flags_parse_into_serve_args():
    args = parse("runs/rwm", "--replicas", "1:3", "--port", "8711", "--max-rows", "500", "--name", "rwm")
    sargs = serve_command.serve_args(args)
    assert (sargs.min_replicas, sargs.max_replicas, sargs.max_rows, sargs.name) == (1, 3, 500, "rwm")
    assert args.port == 8711 and args.run is serve_command.run and args.func is serve_command.run
    defaults = serve_command.serve_args(parse("runs/rwm"))
    assert defaults.max_replicas == 2 and not defaults.allow_anonymous and parse("runs/rwm").port != 8000
    assert serve_command.serve_args(parse("m", "--replicas", "2")).min_replicas == 2


@pytest.mark.parametrize("value", ["0:1", "3:2", "a:b", "1:x"])
def test_bad_replicas_are_usage_errors(value, capsys):
    with pytest.raises(SystemExit):
        parse("m", "--replicas", value)
    assert "--replicas" in capsys.readouterr().err


def test_user_errors_before_ray(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("CADASG_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API keys"):
        serve_command.run(parse(str(tmp_path)))
    monkeypatch.setenv("CADASG_API_KEYS", f"{hash_key('k')} model=*")
    with pytest.raises(ArtifactError, match="not a CA-DASG model directory"):
        serve_command.run(parse(str(tmp_path)))
    model_dir = str(tiny_model.save(tmp_path / "m"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="choose another --port"):
            serve_command.run(parse(model_dir, "--port", str(busy.getsockname()[1])))


def test_module_entry_point_reports_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CADASG_API_KEYS", f"{hash_key('k')} model=*")
    assert serve_command.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadasg: error:") and err.count("\n") == 1


def test_the_balancer_is_the_default_and_replicas_take_the_ports_above_it(monkeypatch):
    for name in ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT",
                 "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
                 "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"):
        monkeypatch.setenv(name, "x")  # recorded, so the test's changes are undone after it
        monkeypatch.delenv(name)
    assert parse("m").ingress == "balancer" and parse("m", "--ingress", "proxy").ingress == "proxy"
    serve_command.direct_ingress_env(8700, 2)
    import os

    assert os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert (os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"], os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]
            ) == ("8701", "8708")
    assert serve_command.direct_ports(8700, 2) == list(range(8701, 8709))
    assert os.environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"


def test_a_busy_replica_port_is_refused_before_ray(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CADASG_API_KEYS", f"{hash_key('k')} model=*")
    model_dir = str(tiny_model.save(tmp_path / "m"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{taken}"):
            serve_command.run(parse(model_dir, "--port", str(taken - 2)))


def test_ports_past_65535_are_refused_before_ray(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CADASG_API_KEYS", f"{hash_key('k')} model=*")
    model_dir = str(tiny_model.save(tmp_path / "m"))
    with pytest.raises(ConfigError, match="past 65535; choose a lower --port"):
        serve_command.run(parse(model_dir, "--port", "65530"))
    with pytest.raises(ConfigError, match="port 70000 is out of range"):
        serve_command.run(parse(model_dir, "--port", "70000", "--ingress", "proxy"))
