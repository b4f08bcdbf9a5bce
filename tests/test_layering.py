"""ARCHITECTURE.md's layering rule, enforced on the import statements of amqpbroker/:
a module imports only modules listed above it; only the anyio edge imports anyio; the
broker core never imports pamqp.  The load tool (amqpbroker_perf/, a client of any broker)
is outside the package: it imports nothing of amqpbroker, and only __main__ imports it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "amqpbroker"
PERF = PKG.parent / "amqpbroker_perf"

# Bottom to top, as in docs/architecture.md. A new module needs a place here (and in
# docs/architecture.md).  Exchange types sit below config, which names them; the config's
# dataclasses (configschema) below the loader that fills them (config).
LAYERS = ["errors", "access", "limits", "passwords", "metrics", "scheduler", "values", "filterops", "filterpolicy",
          "topictrie", "exchanges",
          "policies", "yamlfile", "configschema", "configerrors", "configcross", "config",
          "framefaults", "wirecheck", "methods", "framing", "message", "poisonpill",
          "dedup", "confirms",
          "queues", "store", "queuetimers", "dlx", "delayset", "delayed", "dedupex", "recovery", "vhost",
          "broker",
          "definitions", "adminviews", "adminaccounts", "adminpolicies", "admin",
          "content", "delivery", "replyto", "publish", "transactions", "topology",
          "channel", "heartbeat", "auth", "handshake", "conntimers", "connection", "listeners",
          "tls",
          "prometheus", "prometheus_objects", "http", "server", "ctl", "__main__", "testing",
          "pytest_plugin"]
RANK = {name: i for i, name in enumerate(LAYERS)}

ANYIO_ALLOWED = {"listeners", "tls", "http.server", "server", "store.sqlite", "testing"}
NO_PAMQP = {"filterops", "filterpolicy", "access", "limits", "passwords", "metrics", "scheduler",
            "auth", "topictrie", "exchanges", "confirms", "dedup", "dedupex",
            "queues", "policies", "vhost", "broker", "definitions", "adminviews",
            "adminaccounts", "admin"}
PACKAGES = {"store", "queues", "exchanges", "http"}  # one layer each, whatever modules they hold
PACKAGE_ATTRIBUTES = {"__version__"}  # defined in amqpbroker/__init__.py, importable by all


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    """amqpbroker-relative module name -> its layer ("store.sqlite" -> "store")."""
    return module.split(".")[0]


def package_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(internal modules relative to amqpbroker, top-level external packages)."""
    mod = module_name(path)
    is_pkg = path.name == "__init__.py"
    # the package a relative import is resolved against
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = [p for p in base if p]
    internal: set[str] = set()
    external: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")
                if top[0] == "amqpbroker":
                    internal.add(".".join(top[1:]))
                else:
                    external.add(top[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "amqpbroker":
                    if parts[0] != "__future__":
                        external.add(parts[0])
                    continue
                anchor, module = [], parts[1:]
            else:
                up = node.level - 1
                anchor = base[:len(base) - up] if up else base
                module = node.module.split(".") if node.module else []
            if module:
                internal.add(".".join(anchor + module))
            else:  # `from . import errors, framing` names modules (or package attributes)
                for alias in node.names:
                    internal.add(".".join(anchor + [alias.name]))
    return internal, external


def all_modules():
    return [(module_name(p), p) for p in package_modules()]


def test_every_module_has_a_layer():
    unknown = [m for m, _ in all_modules() if m and layer_of(m) not in RANK]
    assert not unknown, (f"modules without a layer: {unknown}; add them to LAYERS here and "
                         "to ARCHITECTURE.md")


def test_package_init_imports_nothing_internal():
    internal, _ = imports(PKG / "__init__.py")
    assert internal == set()


@pytest.mark.parametrize("mod, path", [m for m in all_modules() if m[0]],
                         ids=[m for m, _ in all_modules() if m])
def test_imports_only_lower_layers(mod, path):
    internal, _ = imports(path)
    mine = layer_of(mod)
    bad = []
    for target in internal:
        if target in PACKAGE_ATTRIBUTES:
            continue
        layer = layer_of(target)
        if layer == mine and layer in PACKAGES:
            continue  # a package's modules may use each other (store/: the protocol,
            # memory, sqlite; queues/ and exchanges/: the protocol, the types, their parts)
        if layer not in RANK or RANK[layer] >= RANK[mine]:
            bad.append(target)
    assert not bad, f"{mod} imports {sorted(bad)}, which are not below it in {LAYERS}"


@pytest.mark.parametrize("mod, path", [m for m in all_modules() if m[0]],
                         ids=[m for m, _ in all_modules() if m])
def test_anyio_only_at_the_edge(mod, path):
    _, external = imports(path)
    if mod not in ANYIO_ALLOWED:
        assert "anyio" not in external, f"{mod} imports anyio; only {ANYIO_ALLOWED} may"
        assert "asyncio" not in external or mod in ANYIO_ALLOWED, f"{mod} imports asyncio"


@pytest.mark.parametrize("mod", sorted(NO_PAMQP))
def test_core_never_imports_pamqp(mod):
    paths = sorted((PKG / mod).glob("*.py")) if (PKG / mod).is_dir() else [PKG / f"{mod}.py"]
    assert paths, mod
    for path in paths:
        _, external = imports(path)
        assert "pamqp" not in external, f"{module_name(path)} imports pamqp"


def test_import_parser_sees_relative_imports():
    internal, external = imports(PKG / "connection.py")
    assert {"errors", "framing", "channel"} <= internal
    assert "pamqp" in external


def test_the_load_tool_is_a_client_outside_the_broker():
    """amqpbroker_perf drives asyncio (and uvloop) itself and speaks AMQP through pamqp and
    its own frame walking: nothing of the broker's, so it measures any broker alike."""
    files = sorted(PERF.glob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "client.py", "tool.py"}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level \
                else []
            assert not [n for n in names if n.split(".")[0] == "amqpbroker"], \
                f"{path.name} imports {names}"


def test_only_main_imports_the_load_tool():
    users = [m for m, p in all_modules() if "amqpbroker_perf" in imports(p)[1]]
    assert users == ["__main__"]
