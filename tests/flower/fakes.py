"""In-process stand-ins for a Flower deployment: real ClientApp handlers, each with its own
Context, called by a stand-in for FlowerTransport (no Flower engine)."""

import tempfile
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from gptfl_secure.flower import client_app, partitions, wire
from gptfl_secure.flower.coldstart import node_message
from gptfl_secure.learning.data import Dataset

D = 8
MOD = 2**32
LABELS = {0: {"cat", "dog"}, 1: {"dog"}, 2: {"cat", "owl"}, 3: {"owl"}, 4: {"dog", "emu"}}
HANDLERS = {wire.SECAGG: client_app.secagg, wire.ENROLL: client_app.enroll,
            wire.PLAIN: client_app.plain}
NO_RUN = client_app.RunSettings({})


def _message(content: RecordDict, message_type: str, node: int) -> Message:
    return node_message(content, message_type, node)


def _node_context(cid: int, **node_config) -> Context:
    return Context(run_id=1, node_id=100 + cid, node_config={"partition-id": cid, **node_config},
                   state=RecordDict(), run_config={})


class FakeNodes:
    """Stands in for FlowerTransport: each message goes to a node's ClientApp handler; a
    ``tamper(group, cid, reply record) -> reply (any mapping) or None`` may rewrite a reply's
    record of each session (``group`` names the session and its step: ``round1/share_keys``),
    or of an enroll / plain reply (``group`` is the exchange's)."""

    def __init__(self, n: int, tamper=None, handlers=None, **node_config) -> None:
        node_config.setdefault("partition-cache", _partition_cache(n))
        self.contexts = {c: _node_context(c, **node_config) for c in range(n)}
        self.nodes = {c: 100 + c for c in range(n)}
        self.tamper = tamper
        self.handlers = {**HANDLERS, **(handlers or {})}
        self.lines: list[str] = []
        self.groups: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    @property
    def count(self) -> int:
        return len(self.groups)

    def keys(self) -> dict[int, bytes]:
        return {c: client_app.identity(ctx).public for c, ctx in self.contexts.items()}

    def give_inputs(self, r: int) -> dict[int, np.ndarray]:
        vectors = {c: np.arange(D, dtype=np.uint64) * (c + 1) for c in self.contexts}
        for c, ctx in self.contexts.items():
            client_app._record(ctx, client_app.INPUTS)[f"round-{r}"] = vectors[c].tobytes()
        return vectors

    def exchange(self, message_type, contents, timeout, group, *, by_node=False):
        self.groups.append(group)
        out = {}
        for key, content in contents.items():
            cid = key - 100 if by_node else key
            reply = self.handlers[message_type](_message(content, message_type, 100 + cid),
                                                self.contexts[cid], NO_RUN).content
            if self.tamper is not None:
                reply = self._tampered(group, cid, content, reply)
            if reply is not None:
                out[key] = reply
        return out

    def _tampered(self, group, cid, sent, reply):
        names = [wire.part(i) for i in range(wire.MAX_PARTS) if wire.part(i) in sent]
        if not names:
            rec = self.tamper(group, cid, reply[wire.RECORD])
            return None if rec is None else {wire.RECORD: _config(rec)}
        reply = dict(reply)  # a plain mapping: it may now hold what Flower would not carry
        session_groups = group.split("+")
        for name, session_group in zip(names, session_groups, strict=False):
            rec = self.tamper(session_group, cid, reply[name])
            if rec is None:
                return None
            reply[name] = _config(rec)
        return reply


def _partition_cache(n: int) -> str:
    """A partition cache holding, for each node c < n, a tiny partition whose label names are
    ``LABELS[c]`` (cycled), under the key of an empty run config: what enrolment reads."""
    root = Path(tempfile.mkdtemp(prefix="gptfl-parts-"))
    names = tuple(sorted(set().union(*LABELS.values())))
    for c in range(n):
        ys = np.array([names.index(x) for x in sorted(LABELS[c % len(LABELS)])], np.int64)
        partitions.store(root, partitions.cache_key({}, c),
                         Dataset(np.zeros((len(ys), 1, 2, 2), np.float32), ys, names))
    return str(root)


def _config(rec):
    """A tampered reply as a ConfigRecord when Flower could carry it, else as it is (the
    server must refuse what is not a ConfigRecord)."""
    try:
        return ConfigRecord(dict(rec))
    except (TypeError, ValueError):
        return _Loose(rec)


class _Loose(dict):
    """A reply record whose values Flower's ConfigRecord would not admit."""
