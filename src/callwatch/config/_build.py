"""From checked values to a :class:`Config`: the sections whose keys need more than a kind."""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from ._check import Checker, default_of, join, keys_of, kind
from ..errors import Problem
from ._model import (MODULE, PRESET_NAMES, QUALNAME, SAFE_NAME, SECTIONS, AlertsConfig, Config,
                     GraphiteConfig, HandlersConfig, Key, MemoryConfig, NamingConfig, ProfileConfig, SpikesConfig,
                     WatchTarget)
from ._net import short_hostname
from ._yaml import UNREADABLE, V, show

TOP_KEYS = tuple(s.name for s in SECTIONS)
ENV_CONFIG = "CALLWATCH_CONFIG"
ENV_GRAPHITE = "CALLWATCH_GRAPHITE"
ENV_DISABLED = "CALLWATCH_DISABLED"
_WATCH_KEYS = tuple(n for n, _ in keys_of(WatchTarget))


def _key(cls: type, name: str) -> Key:
    return dict(keys_of(cls))[name]


def build(root: V, chk: Checker) -> Config:
    if root.value is None:
        root = V({}, root.line)
    top = chk.mapping(root, "", TOP_KEYS)
    for name, v in top.items():  # where each section starts, for problems found later (prepare)
        chk.lines[name] = chk.loc(V(None, v.key_line if v.key_line is not None else v.line))
    enabled = True
    if "enabled" in top:
        enabled = chk.value(top["enabled"], "enabled", "enabled", _key(Config, "enabled"), True)
    graphite = _graphite(chk, top.get("graphite"))
    n, _ = chk.section(NamingConfig, top.get("naming"), "naming")
    naming = NamingConfig(**n)
    host = short_hostname() if naming.host == "auto" else naming.host
    watch = _watch(chk, top.get("watch"))
    handlers = _handlers(chk, top.get("handlers"))
    profile = _profile(chk, top["profile"]) if "profile" in top else None
    if profile is None:
        for w in watch:
            if w.mode == "sampled":
                chk.problems.append(dataclasses.replace(_SAMPLED, where=w.where))
    memory = _memory(chk, top["memory"]) if "memory" in top else None
    s, _ = chk.section(SpikesConfig, top.get("spikes"), "spikes")
    a, _ = chk.section(AlertsConfig, top.get("alerts"), "alerts")
    return Config(enabled=enabled, graphite=graphite, host=host.replace(".", "_"), worker=naming.worker,
                  slot_dir=naming.slot_dir, watch=watch, handlers=handlers, profile=profile,
                  memory=memory, spikes=SpikesConfig(**s), alerts=AlertsConfig(**a), source=chk.where, where=dict(chk.lines))


_SAMPLED = Problem("", "mode", "'mode: sampled' reads the sampled profiles, but there is no profile section",
                   "add 'profile: {rate: 0.01}'")


def _graphite(chk: Checker, v: V | None) -> GraphiteConfig:
    g, m = chk.section(GraphiteConfig, v, "graphite")
    cfg = GraphiteConfig(**g)
    if "timeout" not in g:  # the default: never longer than half an interval
        return dataclasses.replace(cfg, timeout=min(cfg.timeout, cfg.interval / 2))
    if cfg.timeout >= cfg.interval:
        chk.add(m["timeout"], "graphite.timeout",
                f"{cfg.timeout:g} s is not less than the interval ({cfg.interval} s), so one stuck "
                "send could hold up the next flush", f"use a timeout under {cfg.interval} s, e.g. "
                f"timeout: {min(GraphiteConfig().timeout, cfg.interval / 4):g}")
    return cfg


def _watch(chk: Checker, v: V | None) -> tuple[WatchTarget, ...]:
    if v is None or v.value is None:
        return ()
    if not isinstance(v.value, list):
        chk.add(v, "watch", f"expected a list of targets, got {kind(v.value)}",
                "write each target on its own line starting with '- '")
        return ()
    out = [_watch_item(chk, item, f"watch[{i}]") for i, item in enumerate(v.value)]
    return tuple(w for w in out if w is not None)


def _watch_item(chk: Checker, item: V, key: str) -> WatchTarget | None:
    if isinstance(item.value, str):
        m = {"target": item}
    elif isinstance(item.value, dict):
        m = chk.mapping(item, key, _WATCH_KEYS)
        if "preset" in m:
            return _preset(chk, m, key)
        if "target" not in m:
            chk.add(item, key, "missing 'target' (or 'preset')",
                    "add e.g. 'target: myapp.db:get_user' or 'preset: redis'")
            return None
    else:
        chk.add(item, key, f"expected a target string or a mapping, got {kind(item.value)}",
                "write '- myapp.db:get_user', '- {target: myapp.db:get_user, group: db}' or '- {preset: redis}'")
        return None
    tv = m["target"]
    target = chk.value(tv, join(key, "target"), "target", dataclasses.replace(_key(WatchTarget, "target"),
                                                                               kind="str"), None)
    mode = chk.value(m["mode"], join(key, "mode"), "mode", _key(WatchTarget, "mode"), None) if "mode" in m else "wrap"
    if target is None or mode is None:
        return None
    if mode == "sampled":
        # Code that cannot be patched (C functions, third-party internals): reported from
        # the sampled profiles whenever a profiled function's name matches the pattern.
        return WatchTarget(target=target, where=chk.loc(tv), mode="sampled")
    mod, colon, qual = target.partition(":")
    if not colon or not MODULE.match(mod) or not QUALNAME.match(qual):
        chk.add(tv, f"{key}.target", f"{show(target)} is not of the form 'module.path:Qualified.name'",
                "write e.g. 'myapp.storage:Storage.get_user' or a glob like 'myapp.storage:*.get_*'")
        return None
    extra = {n: chk.value(m[n], join(key, n), n, _key(WatchTarget, n), None) for n in ("name", "group") if n in m}
    wt = WatchTarget(target=target, where=chk.loc(tv), mode=mode, **extra)
    if wt.name is not None and wt.is_glob:
        chk.add(m["name"], f"{key}.name", "'name' cannot be used with a glob target (it matches many functions)",
                "remove 'name', or list the functions one by one")
        return None
    return wt


def _preset(chk: Checker, m: dict[str, V], key: str) -> WatchTarget | None:
    pv = m["preset"]
    if pv.value not in PRESET_NAMES:
        close = difflib.get_close_matches(str(pv.value), PRESET_NAMES, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(PRESET_NAMES)
        chk.add(pv, f"{key}.preset", f"unknown preset {show(pv.value)}", hint)
        return None
    for other in ("target", "name"):
        if other in m:
            chk.add(m[other], f"{key}.{other}", f"'{other}' cannot be used with 'preset'",
                    "give the preset alone (and optionally its group), or a target")
            return None
    group = chk.value(m["group"], f"{key}.group", "group", _key(WatchTarget, "group"), None) if "group" in m else None
    return WatchTarget(target="", group=group, where=chk.loc(pv), preset=str(pv.value))


def _string_map(chk: Checker, v: V | None, path: str, k: Key, what: str) -> dict[str, V]:
    """A mapping of names (custom keys' common shape); {} after a problem."""
    if v is None:
        return {}
    if not isinstance(v.value, dict):
        chk.add(v, path, f"expected a mapping of {what}, got {kind(v.value)}", k.fix)
        return {}
    return {name: item for name, item in v.value.items() if item.value is not UNREADABLE}  # reported already


def _handlers(chk: Checker, v: V | None) -> HandlersConfig:
    h, m = chk.section(HandlersConfig, v, "handlers")
    rename: dict[str, str] = {}
    for old, new in _string_map(chk, m.get("rename"), "handlers.rename", _key(HandlersConfig, "rename"),
                                "old name to new name").items():
        if not isinstance(new.value, str) or not new.value or len(new.value) > 200:
            chk.add(new, f"handlers.rename.{old}", f"expected a non-empty string, got {show(new.value)}",
                    "give the new handler name (at most 200 characters)")
        else:
            rename[old] = new.value
    dk = _key(HandlersConfig, "dimensions")
    dimensions: dict[str, dict[str, WatchTarget]] = {}
    for hname, per in _string_map(chk, m.get("dimensions"), "handlers.dimensions", dk,
                                  "handler to dimensions").items():
        for dname, fv in _string_map(chk, per, f"handlers.dimensions.{hname}", dk,
                                     "dimension to function").items():
            where = f"handlers.dimensions.{hname}.{dname}"
            f = fv.value
            mod, colon, qual = f.partition(":") if isinstance(f, str) and len(f) <= 1000 else ("", "", "")
            if not colon or not MODULE.match(mod) or not QUALNAME.match(qual) or any(c in qual for c in "*?["):
                chk.add(fv, where, f"{show(f)} is not of the form 'module.path:function'", dk.fix)
            elif not SAFE_NAME.match(dname):
                chk.add(fv, where, f"the dimension name {dname!r} is not allowed", "use letters, digits, '_' and '-'")
            else:
                dimensions.setdefault(hname, {})[dname] = WatchTarget(f, where=chk.loc(fv))
    return HandlersConfig(rename=rename, dimensions=dimensions, **h)


def _profile(chk: Checker, v: V) -> ProfileConfig:
    if v.value is None:
        return ProfileConfig()
    p, m = chk.section(ProfileConfig, v, "profile")
    bk = _key(ProfileConfig, "call_budget")
    budget: dict[str, int] = {}
    for fname, cv in _string_map(chk, m.get("call_budget"), "profile.call_budget", bk,
                                 "watched name to a count").items():
        if not isinstance(cv.value, int) or isinstance(cv.value, bool) or cv.value < 0:
            chk.add(cv, f"profile.call_budget.{fname}", f"expected a whole number, got {show(cv.value)}",
                    "give the most calls per request that is normal, e.g. 5")
        else:
            budget[fname] = cv.value
            chk.lines[f"profile.call_budget.{fname}"] = chk.loc(cv)
    dump_dir = _writable_dir(chk, m.get("dump_dir"), ProfileConfig, "profile.dump_dir", "/var/tmp/callwatch-profiles")
    return ProfileConfig(call_budget=budget, dump_dir=dump_dir, **p)


def _memory(chk: Checker, v: V) -> MemoryConfig:
    m, raw = chk.section(MemoryConfig, v, "memory")
    hunt_dir = _writable_dir(chk, raw.get("hunt_dir"), MemoryConfig, "memory.hunt_dir", "/var/tmp/callwatch-leaks")
    return MemoryConfig(hunt_dir=hunt_dir, **m)


def _writable_dir(chk: Checker, v: V | None, cls: type, path: str, example: str) -> str | None:
    """A directory key (``profile.dump_dir``, ``memory.hunt_dir``) that must be writable."""
    name = path.rsplit(".", 1)[1]
    if v is None:
        return default_of(cls, name)  # type: ignore[no-any-return]
    s = chk.value(v, path, name, dataclasses.replace(_key(cls, name), kind="str"), None)
    if s is None:
        return None
    why = _unwritable(Path(s))
    if why:
        chk.add(v, path, f"{s!r} is not a directory this process can write ({why})",
                "create it and let the application's user write to it, or choose another directory, "
                f"e.g. {name}: {example}")
        return None
    return str(s)


def _unwritable(p: Path) -> str:
    """Why dumps could not be written under ``p`` ("" when they could); creates nothing."""
    p = p.absolute()
    for d in (p, *p.parents):
        if d.exists():
            if not d.is_dir():
                return f"{d} is not a directory"
            if not os.access(d, os.W_OK | os.X_OK):
                return f"{d} is not writable by user id {os.getuid()}" if d == p else \
                    f"{p} does not exist and {d} is not writable by user id {os.getuid()}"
            return ""
    return "no part of the path exists"


def apply_env(cfg: Config, env: Any) -> tuple[Config, list[Problem]]:
    """``CALLWATCH_DISABLED`` and ``CALLWATCH_GRAPHITE`` over the file's values."""
    from .. import _env
    from ._net import split_host_port

    problems: list[Problem] = []
    enabled, graphite = cfg.enabled, cfg.graphite
    raw = env.get(ENV_DISABLED)
    if raw is not None:
        on = _env.switch(raw)
        if on is None:
            problems.append(Problem(f"environment variable {ENV_DISABLED}", "", f"{raw!r} is not a switch",
                                    f"set {ENV_DISABLED}=1 to turn callwatch off, or unset it"))
        elif on:
            enabled = False
    raw = env.get(ENV_GRAPHITE)
    if raw is not None and raw.strip():
        host, port, why = split_host_port(raw, graphite.port)
        if host is None or port is None:
            problems.append(Problem(f"environment variable {ENV_GRAPHITE}", "",
                                    f"{raw!r} is not HOST[:PORT] ({why})",
                                    f"set e.g. {ENV_GRAPHITE}=127.0.0.1:2003, or [::1]:2003 for IPv6"))
        else:
            graphite = dataclasses.replace(graphite, host=host, port=port)
    return dataclasses.replace(cfg, enabled=enabled, graphite=graphite), problems


