"""Settings of the service-provider commands (``storescp``, ``qrscp``): one table of options,
read from the command line and from a TOML (or INI) file, the command line winning.

Each setting has its key in the file, the argparse destination it fills, a type and a
default. An unknown key or a value of the wrong type stops the command at start with a
message that names it: a mistyped lock-down setting must not leave a server silently open.

A TOML file holds the settings in a ``[storescp]`` or ``[qrscp]`` table, or at the top level;
``users`` and ``destinations`` are sub-tables (``[qrscp.users]``, ``alice = "secret"``). An
INI file has a ``[storescp]``/``[qrscp]`` section and ``[users]``/``[destinations]``.
"""

from __future__ import annotations

import argparse
import configparser
import hmac
import importlib
import importlib.util
import inspect
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from dicomio.apps._common import UsageError
from dicomio.config import DEFAULT_MAX_PDU
from dicomio.pdu import UserIdentityRQ

__all__ = [
    "SETTINGS",
    "Setting",
    "apply_config",
    "identity_verifier",
    "load_config",
    "load_hook",
]

STORESCP, QRSCP = "storescp", "qrscp"
BOTH = frozenset({STORESCP, QRSCP})
#: Sub-tables (TOML) or sections (INI) that hold a mapping, not one value.
TABLES = ("users", "destinations")


@attrs.frozen
class Setting:
    """One setting: ``key`` in the file, ``dest`` on the argparse namespace."""

    key: str
    dest: str
    kind: str  # "str", "int", "float", "bool", "list" (of str), "table" (str -> str)
    default: Any
    apps: frozenset[str] = BOTH
    #: The smallest value allowed (numbers).
    minimum: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("port", "port", "int", 11112, minimum=0),
    Setting("ae_title", "aet", "str", None),  # the command's own default
    Setting("bind", "bind", "str", "0.0.0.0"),
    Setting("max_pdu", "max_pdu", "int", DEFAULT_MAX_PDU, minimum=0),
    Setting("connect_timeout", "connect_timeout", "float", 30.0, minimum=0),
    Setting("acse_timeout", "acse_timeout", "float", 30.0, minimum=0),
    Setting("dimse_timeout", "dimse_timeout", "float", 60.0, minimum=0),
    Setting("network_timeout", "network_timeout", "float", None, minimum=0),
    Setting("max_associations", "max_associations", "int", 1000, minimum=1),
    Setting("workers", "workers", "int", 1, minimum=1),
    Setting("max_associations_per_ae", "max_associations_per_ae", "int", None, minimum=1),
    Setting("require_called_aet", "require_called_aet", "bool", False),
    Setting("require_calling_aet", "require_calling_aet", "list", ()),
    Setting("allow_anonymous", "allow_anonymous", "bool", False),
    Setting("user_identity_hook", "user_identity_hook", "str", None),
    Setting("users", "users", "table", {}),
    Setting("tls_cert", "tls_cert", "str", None),
    Setting("tls_key", "tls_key", "str", None),
    Setting("tls_ca", "tls_ca", "str", None),
    Setting("tls_require_client_cert", "tls_require_client_cert", "bool", False),
    Setting("output_directory", "output_directory", "str", ".", frozenset({STORESCP})),
    Setting("layout", "layout", "str", "flat", frozenset({STORESCP})),
    Setting("data", "data", "str", "./dicomio-data", frozenset({QRSCP})),
    # The index: an SQLite file (default: index.sqlite in the data folder) or a
    # postgresql:// URL (dicomio.apps.index).
    Setting("db", "db", "str", None, frozenset({QRSCP})),
    Setting("destinations", "config_destinations", "table", {}, frozenset({QRSCP})),
    Setting("relational", "relational", "bool", False, frozenset({QRSCP})),
    Setting("pn_ignore_case", "pn_ignore_case", "bool", True, frozenset({QRSCP})),
    # Transfer syntaxes (dicomio.apps._syntaxes): names or UIDs. accept: what to accept, in
    # our order of preference (default: all, in the requestor's); store_as: convert to this.
    Setting("accept", "accept", "list", None),
    Setting("store_as", "store_as", "str", None),
    Setting("allow_lossy", "allow_lossy", "bool", False),
)


def settings_for(app: str) -> dict[str, Setting]:
    return {s.key: s for s in SETTINGS if app in s.apps}


def load_config(path: Path, app: str = QRSCP) -> dict[str, Any]:
    """The raw settings for ``app`` in a TOML file, or an INI file (values are then text).

    Settings come from the ``[app]`` table if there is one, else from the top level; a
    top-level ``destinations`` or ``users`` table is taken as well.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as toml_error:
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # AE titles keep case
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            raise UsageError(
                f"{path}: neither TOML ({toml_error}) nor INI ({exc.message})"
            ) from None
        if not parser.sections():
            raise UsageError(f"{path}: not TOML ({toml_error}), and no INI sections") from None
        data = {name: dict(parser[name]) for name in parser.sections()}
        settings = dict(data.pop(app, {}))
        for other in data:
            if other not in (*TABLES, STORESCP, QRSCP):
                raise UsageError(f"{path}: unknown section [{other}]") from None
    else:
        settings = dict(data.get(app, data))
        if app in data:
            stray = [k for k in data if k not in (*TABLES, STORESCP, QRSCP)]
            if stray:
                raise UsageError(f"{path}: {stray[0]!r} is outside the [{app}] table")
    for table in TABLES:
        if table in data and table not in settings:
            settings[table] = data[table]
    return settings


_TRUE, _FALSE = ("1", "yes", "true", "on"), ("0", "no", "false", "off")


def _convert(setting: Setting, value: Any, where: str) -> Any:
    """``value`` as the setting's type; text (from INI) is parsed, TOML types must match."""
    kind, key = setting.kind, setting.key

    def wrong(expected: str) -> UsageError:
        return UsageError(f"{where}: {key} must be {expected}, not {value!r}")

    if kind == "str":
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise wrong("true or false")
    if kind in ("int", "float"):
        number: Any = value
        if isinstance(value, str):
            try:
                number = int(value) if kind == "int" else float(value)
            except ValueError:
                raise wrong("an integer" if kind == "int" else "a number") from None
        if isinstance(number, bool) or not isinstance(
            number, int if kind == "int" else (int, float)
        ):
            raise wrong("an integer" if kind == "int" else "a number")
        if setting.minimum is not None and number < setting.minimum:
            raise wrong(f"at least {setting.minimum:g}")
        return float(number) if kind == "float" else number
    if kind == "list":
        if isinstance(value, str):  # INI: "A, B C"
            return tuple(part for part in value.replace(",", " ").split() if part)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of strings")
        return tuple(value)
    if kind == "table":
        if not isinstance(value, Mapping):
            raise wrong("a table")
        for name, item in value.items():
            if not isinstance(item, str):
                raise UsageError(f"{where}: {key}.{name} must be a string, not {item!r}")
        return dict(value)
    raise AssertionError(kind)


def check_config(raw: Mapping[str, Any], app: str, where: str) -> dict[str, Any]:
    """The settings in ``raw`` checked and converted; UsageError names a bad key."""
    known = settings_for(app)
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        setting = known.get(key)
        if setting is None:
            raise UsageError(f"{where}: unknown key {key!r} for {app} (known: {', '.join(known)})")
        checked[key] = _convert(setting, value, where)
    return checked


def apply_config(args: argparse.Namespace, app: str) -> None:
    """Fill every setting the command line left unset from ``--config``, else its default."""
    path = getattr(args, "config", None)
    values = check_config(load_config(Path(path), app), app, str(path)) if path else {}
    for setting in settings_for(app).values():
        if getattr(args, setting.dest, None) is None:
            default = setting.default
            setattr(args, setting.dest, values.get(setting.key, default))
        elif setting.kind in ("int", "float"):
            # The command line is checked as strictly as the file.
            _convert(setting, getattr(args, setting.dest), "the command line")


# -- user identity (PS3.7 D.3.3.7) -----------------------------------------------------------


def users_verifier(users: Mapping[str, str]) -> Any:
    """A verifier accepting the listed users: username and passcode (type 2) with the right
    password, or username only (type 1) for a user listed with an empty password."""
    table = {name.encode("utf-8"): password.encode("utf-8") for name, password in users.items()}

    async def verify(assoc: Any, identity: UserIdentityRQ) -> bool:
        expected = table.get(bytes(identity.primary_field))
        if expected is None:
            return False
        if identity.user_identity_type == 1:
            return expected == b""
        if identity.user_identity_type == 2:
            return hmac.compare_digest(expected, bytes(identity.secondary_field))
        return False  # Kerberos, SAML, JWT: only a hook can check those

    return verify


def load_hook(spec: str) -> Any:
    """``module:function`` or ``path/to/file.py:function``: the function, called as
    ``verify(assoc, user_identity_rq)`` and returning a bool or (bool, server response),
    plain or ``async``."""
    where, sep, name = spec.rpartition(":")
    if not (sep and where and name):
        raise UsageError(f"user identity hook {spec!r}: expected module:function")
    try:
        if where.endswith(".py"):
            found = importlib.util.spec_from_file_location("dicomio_user_identity_hook", where)
            if found is None or found.loader is None:
                raise ImportError(f"cannot load {where}")
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except (ImportError, OSError) as exc:
        raise UsageError(f"user identity hook {spec!r}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UsageError(f"user identity hook {spec!r}: {where} has no function {name!r}")

    async def verify(assoc: Any, identity: UserIdentityRQ) -> Any:
        verdict = function(assoc, identity)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict

    return verify


def identity_verifier(args: argparse.Namespace) -> Any:
    """The verifier the settings ask for (``users`` or ``user_identity_hook``), or None."""
    users, hook = args.users, args.user_identity_hook
    if users and hook:
        raise UsageError("give users or user_identity_hook, not both")
    if hook:
        return load_hook(hook)
    if users:
        return users_verifier(users)
    return None
